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
local later = start_at > now
orders_ahead(math.floor((#ARGV - 7) / 2))
defer_zadds()
for i = 8, #ARGV, 2 do
  local created, existing, status = create_workflow(ARGV[i], name, version, queue, ARGV[i + 1], '', '', '', priority,
    now, later and start_at or nil, trace)
  if created then
    replies[#replies + 1] = {'created', later and 'SCHEDULED' or 'RUNNING'}
  elseif existing == name then
    replies[#replies + 1] = {'exists', status}
  else
    replies[#replies + 1] = {'conflict', existing}
  end
end
flush_zadds()
return replies
