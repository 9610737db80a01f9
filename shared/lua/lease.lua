-- Hold a fleet-wide duty (firing schedules, exporting the fleet's gauges) for `ttl` ms: taken when nobody holds
-- it, renewed by its holder, lost when the holder stops renewing, or given up at once by a holder that stops
-- (`ttl` 0: the next process takes it over without waiting for it to lapse). Correctness never rests on it (the
-- duties are idempotent); it keeps processes from doing the same work twice.
-- KEYS[1] G; ARGV: G, duty, holder, ttl ms (0: give it up). Returns 1 when `holder` holds the duty now, else 0.
local key, holder, ttl = g_lease(ARGV[2]), ARGV[3], ARGV[4]
if ttl == '0' then
  if redis.call('GET', key) == holder then redis.call('DEL', key) end
  return 0
end
if redis.call('SET', key, holder, 'NX', 'PX', ttl) then return 1 end
if redis.call('GET', key) == holder then
  redis.call('PEXPIRE', key, ttl)
  return 1
end
return 0
