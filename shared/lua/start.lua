-- Start a workflow, idempotently: the workflow id is the idempotency key. A delayed start (start_at > now) waits
-- as SCHEDULED, its first step queued by a timer when it is due.
-- KEYS[1] T; ARGV: G, id, name, version, queue, input JSON, priority, start_at ms (0: now), traceparent ('' untraced)
-- Returns {'created', status} | {'exists', status} | {'conflict', existing name}
local id, name, version, queue, input = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local priority, start_at, trace = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local existing = redis.call('HMGET', k_wf(id), 'name', 'status')
if existing[1] then
  if existing[1] == name then return {'exists', existing[2]} end
  return {'conflict', existing[1]}
end
local now = now_once()
if start_at > now then
  create_workflow(id, name, version, queue, input, '', '', '', priority, now, start_at, trace)
  return {'created', 'SCHEDULED'}
end
create_workflow(id, name, version, queue, input, '', '', '', priority, now, nil, trace)
return {'created', 'RUNNING'}
