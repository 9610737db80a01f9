-- Start workflows, idempotently: a workflow id is its idempotency key. A delayed start (start_at > now) waits
-- as SCHEDULED, its first step queued by a timer when it is due. One call starts one workflow (`client.start`)
-- or a batch of them (`client.start_many`: the ids of one shard, a hundred or so per call), each independently.
-- KEYS[1] T; ARGV: G, what the workflows share (name, version, queue, priority, start_at ms (0: now), traceparent
-- ('' untraced)), then per workflow: id, input JSON (two arguments each: packing arguments is most of a batch's
-- cost on the client)
-- Returns per workflow {'created', status} | {'exists', status} | {'conflict', existing name}
local now = now_once()
local replies = {}
local name, version, queue = ARGV[2], ARGV[3], ARGV[4]
local priority, start_at, trace = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
for i = 8, #ARGV, 2 do
  local id, input = ARGV[i], ARGV[i + 1]
  local existing = redis.call('HMGET', k_wf(id), 'name', 'status')
  if existing[1] then
    table.insert(replies, {existing[1] == name and 'exists' or 'conflict', existing[1] == name and existing[2] or existing[1]})
  elseif start_at > now then
    create_workflow(id, name, version, queue, input, '', '', '', priority, now, start_at, trace)
    table.insert(replies, {'created', 'SCHEDULED'})
  else
    create_workflow(id, name, version, queue, input, '', '', '', priority, now, nil, trace)
    table.insert(replies, {'created', 'RUNNING'})
  end
end
return replies
