-- Halt queued steps whose workflow version no live dispatcher runs while other versions of that workflow
-- are live (VERSION_MISMATCH; `bdurable resume` re-queues them). Runs after a dispatcher leaves and
-- periodically in the scheduler. KEYS[1] T; ARGV: G. Returns how many workflows were halted.
local now = now_ms()
local halted = 0
for _, member in ipairs(redis.call('SMEMBERS', K_STEP_QUEUES)) do
  local queue, name, version = string.match(member, '^(.-)\t(.-)\t(.*)$')
  local list = k_step_queue(queue, name, version)
  if redis.call('LLEN', list) == 0 then
    redis.call('SREM', K_STEP_QUEUES, member)
  elseif version_liveness(name, version, now) == 'other' then
    for _, item in ipairs(redis.call('LRANGE', list, 0, -1)) do
      local id = string.sub(item, 3)
      if redis.call('EXISTS', k_wf(id)) == 1 then
        halt_version_mismatch(id, name, version, now)
        halted = halted + 1
      end
    end
    redis.call('DEL', list, k_wake(list))
    redis.call('SREM', K_STEP_QUEUES, member)
  end
end
return halted
