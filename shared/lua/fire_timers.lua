-- Fire due timers, by the engine's clock: durable sleeps resolve, delayed task retries go back on their ready
-- queue, event waits time out, delayed starts begin, rate limits let held-back calls go, work set aside is
-- tried again (lib.lua, "work set aside": a timer that fails is set aside itself, the others fire). ZREM decides who fires: with several schedulers each timer fires once.
-- KEYS[1] T; ARGV: G, max timers
-- Returns {ms until the next timer or -1, lag ms of each fired timer...}
local now = now_once()
local due = redis.call('ZRANGEBYSCORE', K_TIMERS, '-inf', int(now), 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local result = {-1}
local faults = redis.call('HLEN', K_FAULTS) > 0  -- a timer that fires work set aside clears its fault once it works

local function fire(member)
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
    deliver(id, seq, inbox_ok(seq, 'null'), 'done', now)
  elseif kind == 'r' then
    if redis.call('EXISTS', k_task(seq, id)) == 1 then push_task(id, seq, now, false) end
  elseif kind == 'e' then
    local raw = redis.call('HGET', k_calls(id), seq)
    if raw then
      local record = cjson.decode(raw)
      local timeout = error_record('EventTimeoutError', 'timed out waiting for event ' .. record.n)
      if deliver(id, seq, inbox_error(seq, timeout), 'failed', now) == 1 then unregister_wait(id, seq, record) end
    end
  elseif kind == 'f' then  -- a work item set aside: back on its ready queue
    requeue(string.sub(member, 3), now)
  elseif kind == 'b' then  -- a bus message set aside: next in line on the bus
    redis.call('RPUSH', K_BUS, string.sub(member, 3))
    if redis.call('LLEN', K_BUS_WAKE) == 0 then redis.call('LPUSH', K_BUS_WAKE, '1') end
  end
end

for i = 1, #due, 2 do
  local member, score = due[i], tonumber(due[i + 1])
  if redis.call('ZREM', K_TIMERS, member) == 1 then
    if isolated(member, fire, member) and faults then redis.call('HDEL', K_FAULTS, member) end
    table.insert(result, now - score)
  end
end
local first = redis.call('ZRANGE', K_TIMERS, 0, 0, 'WITHSCORES')
if #first > 0 then result[1] = math.max(0, tonumber(first[2]) - now) end
return result
