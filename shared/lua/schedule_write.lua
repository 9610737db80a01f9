-- Write a schedule, compare-and-set: every change of a schedule (create, update, pause, a firing's new state,
-- delete) is one call of this script, applied only if the schedule is as the writer last read it.
-- KEYS[1] G; ARGV: G, schedule id, expected revision ('new': must not exist, '*': must exist, N: must be at N),
-- due ('' not due: paused or over; 'delete'; or its next due ms), then field/value pairs.
-- Returns 'ok' | 'exists' | 'missing' | 'stale'.
local id, expected, due = ARGV[2], ARGV[3], ARGV[4]
local key = g_schedule(id)
local rev = redis.call('HGET', key, 'rev')
if expected == 'new' then
  if rev then return 'exists' end
elseif not rev then
  return 'missing'
elseif expected ~= '*' and rev ~= expected then
  return 'stale'
end
if due == 'delete' then
  redis.call('DEL', key)
  redis.call('ZREM', G_SCHEDULES_DUE, id)
  redis.call('SREM', G_SCHEDULE_IDS, id)
  return 'ok'
end
if #ARGV >= 5 then redis.call('HSET', key, unpack(ARGV, 5)) end
redis.call('HINCRBY', key, 'rev', 1)
redis.call('SADD', G_SCHEDULE_IDS, id)
if due == '' then
  redis.call('ZREM', G_SCHEDULES_DUE, id)
else
  -- wake the schedulers when this is now the earliest schedule (they sleep until the earliest)
  local first = redis.call('ZRANGE', G_SCHEDULES_DUE, 0, 0, 'WITHSCORES')
  redis.call('ZADD', G_SCHEDULES_DUE, due, id)
  if #first == 0 or tonumber(first[2]) > tonumber(due) then redis.call('PUBLISH', CH_TIMERS, due) end
end
return 'ok'
