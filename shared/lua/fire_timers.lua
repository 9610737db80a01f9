-- Fire due timers, by the engine's clock: durable sleeps resolve, delayed task retries go back on their ready
-- queue, event waits time out, delayed starts begin, rate limits let held-back calls go, work set aside is
-- tried again (lib.lua, "work set aside": a timer that fails is set aside itself, the others fire). ZREM decides who fires: with several schedulers each timer fires once.
-- KEYS[1] T; ARGV: G, max timers
-- Returns {ms until the next timer or -1, lag ms of each fired timer...}
local now = now_once()
local due = redis.call('ZRANGEBYSCORE', K_TIMERS, '-inf', int(now), 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local result = {-1}
local faults = redis.call('HLEN', K_FAULTS) > 0  -- a timer that fires work set aside clears its fault once it works

-- A delivery tried again after it failed (work set aside) may find it recorded already, its step not queued
-- (what failed): it queues the step, which is idempotent.
local function delivered(id, again, ...)
  if deliver(...) == 1 then return true end
  if again then enqueue_step(id, now, true) end
  return again
end

local function fire(member, again)
  local kind, id, seq = string.sub(member, 1, 1), nil, nil
  if kind == 's' or kind == 'r' or kind == 'e' then kind, id, seq = parse_timer(member) end
  if kind == 'l' then  -- a rate limit's window moved: calls it held back may start
    wake_held(string.sub(member, 3), now)
  elseif kind == 'd' then  -- a delayed start is due
    local start = string.sub(member, 3)
    if redis.call('HGET', k_wf(start), 'status') == 'SCHEDULED' then
      redis.call('HSET', k_wf(start), 'order', next_order())  -- in line among new starts from now
      enqueue_step(start, now, true)
    end
  elseif kind == 's' then
    delivered(id, again, id, seq, inbox_ok(seq, 'null'), 'done', now)
  elseif kind == 'r' then
    if redis.call('EXISTS', k_task(seq, id)) == 1 then push_task(id, seq, now, false) end
  elseif kind == 'e' then
    local raw = redis.call('HGET', k_calls(id), seq)
    if raw then
      local record = cjson.decode(raw)
      local timeout = error_record('EventTimeoutError', 'timed out waiting for event ' .. record.n)
      if delivered(id, again, id, seq, inbox_error(seq, timeout), 'failed', now) then unregister_wait(id, seq, record) end
    end
  elseif kind == 'f' then  -- a work item set aside: back on its ready queue
    requeue(string.sub(member, 3), now)
  elseif kind == 'b' then  -- a bus message set aside: back on the bus
    bus_again(member)
  end
end

for i = 1, #due, 2 do
  local member, score = due[i], tonumber(due[i + 1])
  if redis.call('ZREM', K_TIMERS, member) == 1 then
    local again = faults and redis.call('HEXISTS', K_FAULTS, member) == 1
    if isolated(member, fire, member, again) and again then redis.call('HDEL', K_FAULTS, member) end
    table.insert(result, now - score)
  end
end
if faults then  -- a timer set aside and then removed by what it waited for (a result, an event) needs no retry
  for _, member in ipairs(redis.call('HKEYS', K_FAULTS)) do
    if not redis.call('ZSCORE', K_TIMERS, member) then redis.call('HDEL', K_FAULTS, member) end
  end
end
local first = redis.call('ZRANGE', K_TIMERS, 0, 0, 'WITHSCORES')
if #first > 0 then result[1] = math.max(0, tonumber(first[2]) - now) end
return result
