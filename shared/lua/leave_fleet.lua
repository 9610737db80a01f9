-- A dispatcher leaves, fleet-wide part. KEYS[1] G; ARGV: G, worker.
redis.call('ZREM', G .. ':workers', ARGV[2])
redis.call('DEL', G .. ':worker:' .. ARGV[2])
return 1
