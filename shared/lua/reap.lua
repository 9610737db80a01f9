-- Recover the work of dispatchers whose heartbeat expired (by the Redis clock), in one atomic script:
-- every item they held goes back on a ready list with a new lease, so a late commit from the silent
-- dispatcher is rejected. A task attempt cut short by the crash counts as failed (retried with backoff,
-- dead-lettered after max_attempts); a workflow step that keeps killing its dispatcher fails the workflow
-- after `max_step_crashes` instead of crash-looping the fleet. A crash is only blamed on an item when the
-- dispatcher held nothing else; items held together only count a `suspect` mark. An item marked twice in a
-- row (it keeps dying in company) is then run on its own (see claim.lua), so a poison item is found without
-- failing the innocent work that shared its dispatcher, while a one-off crash or stall recovers at full speed.
-- KEYS[1] T; ARGV: G, max workers, max step crashes, retention ms
-- Returns {workers reaped, steps re-queued, tasks re-queued, tasks dead-lettered, workflows failed, halted}
local max_workers, max_crashes, retention_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local dead = redis.call('ZRANGEBYSCORE', K_WORKERS, '-inf', '(' .. int(now), 'LIMIT', 0, max_workers)
local steps, tasks, dead_lettered, failed = 0, 0, 0, 0
for _, worker in ipairs(dead) do
  local proc = k_proc(worker)
  local held = redis.call('HGETALL', proc)
  local alone = #held == 2  -- one item: the crash is certainly its own
  for i = 1, #held, 2 do
    local item = held[i]
    local kind, rest = string.sub(item, 1, 1), string.sub(item, 3)
    local hash = item_hash(item)
    if redis.call('EXISTS', hash) == 0 then
      -- finished, cancelled or expired meanwhile: nothing to recover
    elseif not alone then  -- not blamed, not counted: marked, and run on its own next if it keeps dying
      redis.call('HINCRBY', hash, 'suspect', 1)
      hand_back(worker, item, now)
      if kind == 'w' then steps = steps + 1 else tasks = tasks + 1 end
    elseif kind == 'w' then
      redis.call('HSET', hash, 'lease', redis.call('INCR', K_SEQ))
      if redis.call('HINCRBY', hash, 'step_crashes', 1) >= max_crashes then
        local err = cjson.encode({type = 'PoisonStepError', traceback = '', message = 'a step of this workflow was ' ..
          'running on a dispatcher that died ' .. max_crashes .. ' times in a row; it was failed to protect the fleet'})
        finish_workflow(rest, 'FAILED', 'null', err, retention_ms, now)
        failed = failed + 1
      else
        enqueue_step(rest, now, true)
        steps = steps + 1
      end
    else
      local id, seq = split_task_item(rest)
      redis.call('HSET', hash, 'lease', redis.call('INCR', K_SEQ))
      local t = redis.call('HMGET', hash, 'attempt', 'max_attempts', 'backoff_ms')
      local attempt = tonumber(t[1])
      local err = cjson.encode({type = 'WorkerLostError', traceback = '',
        message = 'the dispatcher running attempt ' .. attempt .. ' died (' .. worker .. ')'})
      redis.call('HSET', hash, 'last_error', err)
      if attempt >= tonumber(t[2]) then
        exhaust_task(id, seq, err, now)
        dead_lettered = dead_lettered + 1
      else
        add_timer('r|' .. id .. '|' .. seq, now + math.min(tonumber(t[3]) * 2 ^ (attempt - 1), 300000))
        tasks = tasks + 1
      end
    end
  end
  redis.call('DEL', proc, k_holds(worker))
  redis.call('ZREM', K_WORKERS, worker)
end
local halted = 0
if #dead > 0 then halted = sweep_versions(now) end
return {#dead, steps, tasks, dead_lettered, failed, halted}
