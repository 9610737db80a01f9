-- Start a workflow, idempotently: the workflow id is the idempotency key.
-- KEYS[1] T; ARGV: G, id, name, version, queue, input JSON, priority
-- Returns {'created'} | {'exists', status} | {'conflict', existing name}
local id, name, version, queue, input = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local priority = tonumber(ARGV[7])
local existing = redis.call('HMGET', k_wf(id), 'name', 'status')
if existing[1] then
  if existing[1] == name then return {'exists', existing[2]} end
  return {'conflict', existing[1]}
end
create_workflow(id, name, version, queue, input, '', '', '', priority, now_ms())
return {'created'}
