-- Fleet-wide gauges for the scheduler's metrics, in one round trip.
-- KEYS[1] T; ARGV: G. Returns {timers pending, dead-letter entries, live dispatchers,
--   queue 1, depth 1, oldest age ms 1, queue 2, ...} (ages are -1 for empty queues).
local now = now_ms()
local result = {redis.call('ZCARD', K_TIMERS), redis.call('ZCARD', K_DLQ),
  redis.call('ZCOUNT', K_WORKERS, '(' .. int(now), '+inf')}
local queues = {}
local order = {}
local function note(queue, list, hash_of)
  if not queues[queue] then queues[queue] = {depth = 0, oldest = -1} table.insert(order, queue) end
  local q = queues[queue]
  local depth = redis.call('LLEN', list)
  q.depth = q.depth + depth
  if depth > 0 then
    local at = tonumber(redis.call('HGET', hash_of(redis.call('LINDEX', list, -1)), 'queued_at') or now)
    q.oldest = math.max(q.oldest, now - at)
  end
end
for _, member in ipairs(redis.call('SMEMBERS', K_STEP_QUEUES)) do
  local queue, name, version = string.match(member, '^(.-)\t(.-)\t(.*)$')
  note(queue, k_step_queue(queue, name, version), function(item) return k_wf(string.sub(item, 3)) end)
end
for _, member in ipairs(redis.call('SMEMBERS', K_TASK_QUEUES)) do
  local queue, name = string.match(member, '^(.-)\t(.*)$')
  note(queue, k_task_queue(queue, name), function(item)
    local rest = string.sub(item, 3)
    return k_task(split_task_item(rest))
  end)
end
for _, queue in ipairs(order) do
  table.insert(result, queue)
  table.insert(result, queues[queue].depth)
  table.insert(result, queues[queue].oldest)
end
return result
