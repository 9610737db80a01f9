-- The reaper settles task attempts that died with their dispatcher (see reap.lua): each counts as a failed
-- attempt, retried after the delay its retry policy chose, or given up (dead letter) when there is none.
-- An entry is only settled while it is unchanged (another reaper may have settled it already).
-- KEYS[1] T; ARGV: G, then per attempt: item, the value reap returned, retry delay ms (-1: give up), error record.
-- Returns {retried, dead-lettered}.
local now = now_once()
local retried, dead = 0, 0
for i = 2, #ARGV, 4 do
  local item, value, delay, error_json = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  if redis.call('HGET', K_LOST, item) == value then
    redis.call('HDEL', K_LOST, item)
    local _, id, seq = parse_item(item)
    if delay < 0 then delay = nil end
    if task_attempt_failed(id, seq, error_json, delay, now) then dead = dead + 1 else retried = retried + 1 end
  end
end
return {retried, dead}
