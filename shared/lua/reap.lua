-- Recover the work of dispatchers whose heartbeat expired (by the Redis clock), in one atomic script:
-- every item they held goes back on a ready queue with a new lease, so a late commit from the silent
-- dispatcher is rejected. A workflow step that keeps killing its dispatcher fails the workflow after
-- `max_step_crashes` instead of crash-looping the fleet. A crash is only blamed on an item when the
-- dispatcher held nothing else; items held together only count a `suspect` mark. An item marked twice in a
-- row (it keeps dying in company) is then run on its own (see claim.lua), so a poison item is found without
-- failing the innocent work that shared its dispatcher, while a one-off crash or stall recovers at full speed.
-- A task attempt that is blamed counts as failed; whether it is retried (and when) is the retry policy's
-- decision (bdurable/retry.py): the attempt waits in `T:lost` for the reaper, which decides and settles it
-- (settle_lost.lua). A reaper that dies in between leaves it there, and the next pass returns it again.
-- KEYS[1] T; ARGV: G, max workers, max step crashes, retention ms
-- Returns {workers reaped, steps re-queued, tasks re-queued, workflows failed, halted,
--   {{item, lease, attempts including this one, max_attempts, backoff_ms, worker}...}}
local max_workers, max_crashes, retention_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
RETENTION_MS = retention_ms
local now = now_once()
local dead = redis.call('ZRANGEBYSCORE', K_WORKERS, '-inf', '(' .. int(now), 'LIMIT', 0, max_workers)
local steps, tasks, failed = 0, 0, 0
for _, worker in ipairs(dead) do
  local proc = k_proc(worker)
  local held = redis.call('HGETALL', proc)
  local alone = #held == 2  -- one item: the crash is certainly its own
  local function recover(item)
    local kind, id = parse_item(item)
    local hash = item_hash(item)
    if redis.call('EXISTS', hash) == 0 then
      release_permit(item, now)  -- finished, cancelled or expired meanwhile: nothing to recover
    elseif not alone then  -- not blamed, not counted: marked, and run on its own next if it keeps dying
      redis.call('HINCRBY', hash, 'suspect', 1)
      hand_back(worker, item, now)
      if kind == 'w' then steps = steps + 1 else tasks = tasks + 1 end
    elseif kind == 'w' then
      redis.call('HSET', hash, 'lease', redis.call('INCR', K_SEQ))
      if redis.call('HINCRBY', hash, 'step_crashes', 1) >= max_crashes then
        local err = error_record('PoisonStepError', 'a step of this workflow was running on a dispatcher that died ' ..
          max_crashes .. ' times in a row; it was failed to protect the fleet')
        finish_workflow(id, 'FAILED', 'null', err, retention_ms, now)
        failed = failed + 1
      else
        enqueue_step(id, now, true)
        steps = steps + 1
      end
    else
      local lease = redis.call('INCR', K_SEQ)
      redis.call('HSET', hash, 'lease', lease)
      redis.call('HSET', K_LOST, item, lease .. '|' .. worker)
      release_permit(item, now)  -- the attempt ended with its dispatcher
    end
  end
  for i = 1, #held, 2 do
    isolated('f|' .. held[i], recover, held[i])  -- one unreadable item never keeps the others held
  end
  redis.call('DEL', proc, k_holds(worker))
  redis.call('ZREM', K_WORKERS, worker)
end
local halted = 0
if #dead > 0 then halted = sweep_versions(now) end
local lost = {}
local entries = redis.call('HGETALL', K_LOST)
local function check_lost(item, value)
  local sep = string.find(value, '|', 1, true)
  local lease, worker = string.sub(value, 1, sep - 1), string.sub(value, sep + 1)
  local task = item_hash(item)
  local t = redis.call('HMGET', task, 'lease', 'attempts', 'max_attempts', 'backoff_ms')
  if t[1] ~= lease then
    redis.call('HDEL', K_LOST, item)  -- settled, cancelled or gone meanwhile
  else
    table.insert(lost, {item, value, tonumber(t[2] or '0') + 1, tonumber(t[3]), tonumber(t[4]), worker})
  end
end
for i = 1, #entries, 2 do
  if not isolated('f|' .. entries[i], check_lost, entries[i], entries[i + 1]) then
    redis.call('HDEL', K_LOST, entries[i])  -- its timer puts it back on its queue
  end
end
return {#dead, steps, tasks, failed, halted, lost}
