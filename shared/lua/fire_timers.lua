-- Fire due timers, by the Redis server's clock: durable sleeps resolve, delayed task retries go back on
-- their ready list, event waits time out. ZREM decides who fires: with several schedulers each timer fires once.
-- KEYS[1] T; ARGV: G, max timers
-- Returns {ms until the next timer or -1, lag ms of each fired timer...}
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', K_TIMERS, '-inf', int(now), 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local result = {-1}
for i = 1, #due, 2 do
  local member, score = due[i], tonumber(due[i + 1])
  if redis.call('ZREM', K_TIMERS, member) == 1 then
    local kind = string.sub(member, 1, 1)
    local rest = string.sub(member, 3)
    local id, seq = split_task_item(rest)
    if kind == 's' then
      deliver(id, seq, '{"seq":' .. seq .. ',"ok":true,"v":null}', 'done', now)
    elseif kind == 'r' then
      if redis.call('EXISTS', k_task(id, seq)) == 1 then push_task(id, seq, now) end
    elseif kind == 'e' then
      local raw = redis.call('HGET', k_calls(id), seq)
      if raw then
        local record = cjson.decode(raw)
        local entry = cjson.encode({seq = tonumber(seq), ok = false, err = {type = 'EventTimeoutError',
          message = 'timed out waiting for event ' .. record.n}})
        if deliver(id, seq, entry, 'failed', now) == 1 then unregister_wait(id, seq, record) end
      end
    end
    table.insert(result, now - score)
  end
end
local first = redis.call('ZRANGE', K_TIMERS, 0, 0, 'WITHSCORES')
if #first > 0 then result[1] = math.max(0, tonumber(first[2]) - now) end
return result
