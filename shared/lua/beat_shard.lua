-- A dispatcher's heartbeat, per-shard part: which workflow versions it can run, with a lease expiry.
-- KEYS[1] T; ARGV: G, worker, timeout ms, then (name, version) pairs.
local worker, timeout = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
redis.call('ZADD', K_WORKERS, int(now + timeout), worker)  -- the reaper of this shard watches this
for i = 4, #ARGV, 2 do
  local live = k_live(ARGV[i])
  redis.call('ZADD', live, int(now + timeout), ARGV[i + 1] .. '|' .. worker)
  redis.call('ZREMRANGEBYSCORE', live, '-inf', int(now - 3600000))  -- forget long-dead holders
end
return now
