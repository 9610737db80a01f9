-- A dispatcher leaves, fleet-wide part. KEYS[1] G; ARGV: G, worker.
redis.call('ZREM', G_FLEET_WORKERS, ARGV[2])
redis.call('DEL', g_fleet_worker(ARGV[2]))
return 1
