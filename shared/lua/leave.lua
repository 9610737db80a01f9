-- A dispatcher leaves (drained shutdown), per-shard part: drop its liveness entries, then halt steps
-- that only it could have run. KEYS[1] T; ARGV: G, worker, then (name, version) pairs.
local worker = ARGV[2]
for i = 3, #ARGV, 2 do
  redis.call('ZREM', k_live(ARGV[i]), live_member(ARGV[i + 1], worker))
end
local now = now_once()
-- Anything still held is handed back (a drain that timed out); the lease bump fences late commits.
for _, item in ipairs(redis.call('HKEYS', k_proc(worker))) do hand_back(worker, item, now) end
redis.call('DEL', k_proc(worker), k_holds(worker))
redis.call('ZREM', K_WORKERS, worker)
return 1
