-- A dispatcher's heartbeat and registration, fleet-wide part (keys under G).
-- Liveness is an expiry on the Redis server's clock, so worker clocks never matter.
-- KEYS[1] G (routing); ARGV: G, worker, timeout ms, items running now, info JSON ('' to keep), then pairs of
-- (name@version, registry JSON) to register. Returns 1, or 0 when a beat without registration finds none: Redis
-- lost it (restarted without persistence, failed over to an empty replica), and the dispatcher registers again.
local worker, timeout = ARGV[2], tonumber(ARGV[3])
local now = now_once()
local registered = ARGV[5] ~= '' or redis.call('HEXISTS', g_fleet_worker(worker), 'info') == 1
redis.call('ZADD', G_FLEET_WORKERS, int(now + timeout), worker)
redis.call('HSET', g_fleet_worker(worker), 'running', ARGV[4], 'beat_at', int(now))
if ARGV[5] ~= '' then redis.call('HSET', g_fleet_worker(worker), 'info', ARGV[5], 'started_at', int(now)) end
for i = 6, #ARGV, 2 do
  local key = ARGV[i]
  local at = string.find(key, '@[^@]*$')
  local name, version = string.sub(key, 1, at - 1), string.sub(key, at + 1)
  redis.call('HSET', G_REGISTRY, key, ARGV[i + 1])
  redis.call('ZADD', g_versions(name), 'NX', int(now), version)
end
return registered and 1 or 0
