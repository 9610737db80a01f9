-- A dispatcher's heartbeat, per-shard part: which workflow versions it can run, with a lease expiry, and
-- which ready queues it listens to (for the direct hand-off of commits, see `hand_off` in lib.lua).
-- KEYS[1] T; ARGV: G, worker, timeout ms, number of (name, version) pairs, the pairs, then per ready queue
-- its continuation set and its new-start set ('' for task queues).
local worker, timeout, versions = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_once()
redis.call('ZADD', K_WORKERS, int(now + timeout), worker)  -- the reaper of this shard watches this
local last_pair = 4 + 2 * versions
for i = 5, last_pair, 2 do
  local live = k_live(ARGV[i])
  redis.call('ZADD', live, int(now + timeout), live_member(ARGV[i + 1], worker))
  redis.call('ZREMRANGEBYSCORE', live, '-inf', int(now - 3600000))  -- forget long-dead holders
end
local holds = k_holds(worker)
redis.call('DEL', holds)
if #ARGV > last_pair then
  redis.call('HSET', holds, unpack(ARGV, last_pair + 1))
  redis.call('PEXPIRE', holds, timeout)  -- a silent dispatcher stops receiving hand-offs with its lease
end
return now
