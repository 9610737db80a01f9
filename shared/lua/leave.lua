-- A dispatcher leaves (drained shutdown), per-shard part: drop its liveness entries, then halt steps
-- that only it could have run. KEYS[1] T; ARGV: G, worker, then (name, version) pairs.
local worker = ARGV[2]
for i = 3, #ARGV, 2 do
  redis.call('ZREM', k_live(ARGV[i]), ARGV[i + 1] .. '|' .. worker)
end
local proc = k_proc(worker)
local now = now_ms()
-- Anything still held is handed back (a drain that timed out); the lease bump fences late commits.
for _, item in ipairs(redis.call('HKEYS', proc)) do
  local kind = string.sub(item, 1, 1)
  local rest = string.sub(item, 3)
  if kind == 'w' then
    if redis.call('EXISTS', k_wf(rest)) == 1 then
      redis.call('HSET', k_wf(rest), 'lease', redis.call('INCR', K_SEQ))
      enqueue_step(rest, now, true)
    end
  else
    local sep = string.find(rest, '|[^|]*$')
    local id, seq = string.sub(rest, 1, sep - 1), string.sub(rest, sep + 1)
    local task = k_task(id, seq)
    if redis.call('EXISTS', task) == 1 then
      redis.call('HSET', task, 'lease', redis.call('INCR', K_SEQ))
      redis.call('HINCRBY', task, 'attempt', -1)  -- a handed-back attempt was never tried to its end
      push_task(id, seq, now)
    end
  end
end
redis.call('DEL', proc)
redis.call('ZREM', K_WORKERS, worker)
return 1
