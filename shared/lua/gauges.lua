-- Fleet-wide gauges for the metrics, in one round trip.
-- KEYS[1] T; ARGV: G. Returns {timers pending, dead-letter entries, live dispatchers, {{queue, depth, age ms of
-- the item next in line (-1: empty)}...}, engine totals {name, value, ...}, {task, calls held back by limits, ...}}.
local now = now_once()
local queues, order = {}, {}
local function note(queue, lists, hash_of)
  if not queues[queue] then queues[queue] = {depth = 0, oldest = -1} table.insert(order, queue) end
  local q = queues[queue]
  for _, list in ipairs(lists) do
    local depth = redis.call('ZCARD', list)
    q.depth = q.depth + depth
    if depth > 0 then
      local _, id, seq = parse_item(redis.call('ZRANGE', list, 0, 0)[1])
      local readable, at = pcall(redis.call, 'HGET', hash_of(id, seq), 'queued_at')  -- a bad key: its claim sets it aside
      q.oldest = math.max(q.oldest, now - tonumber(readable and at or now))
    end
  end
end
for _, member in ipairs(redis.call('SMEMBERS', K_STEP_QUEUES)) do
  local queue, name, version = parse_step_queue_member(member)
  note(queue, {k_step_queue(queue, version, name), k_step_new(queue, version, name)}, function(id) return k_wf(id) end)
end
for _, member in ipairs(redis.call('SMEMBERS', K_TASK_QUEUES)) do
  local queue, name = parse_task_queue_member(member)
  note(queue, {k_task_queue(queue, name)}, function(id, seq) return k_task(seq, id) end)
end
local depths = {}
for _, queue in ipairs(order) do table.insert(depths, {queue, queues[queue].depth, queues[queue].oldest}) end
local held, tasks = {}, {}  -- calls held back by limits, per task
for _, limit in ipairs(redis.call('SMEMBERS', K_LIMITS)) do
  local task = string.match(limit, '^t\t(.-)\t') or limit
  if not held[task] then held[task] = 0 table.insert(tasks, task) end
  held[task] = held[task] + redis.call('ZCARD', k_held(limit))
end
local waiting = {}
for _, task in ipairs(tasks) do table.insert(waiting, task) table.insert(waiting, held[task]) end
return {redis.call('ZCARD', K_TIMERS), redis.call('ZCARD', K_DLQ), redis.call('ZCOUNT', K_WORKERS, '(' .. int(now), '+inf'),
  depths, redis.call('HGETALL', K_STATS), waiting}
