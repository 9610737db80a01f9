-- Claim up to N ready items for one dispatcher, in one round trip (the reliable-queue pattern).
-- Each item moves into the dispatcher's processing hash with a fresh lease token; a commit must present
-- that token, so work handed to someone else can never be committed by its former holder.
-- KEYS[1] T; ARGV: G, worker, max items, ready list 1, ready list 2, ...
-- Returns a list of claims:
--   {'w', id, lease, name, version, status, input, inbox_start, committed_len, inbox..., '|', calls...}
--   inbox_start is where the dispatcher's cached copy stopped, or -1 (no copy: whole inbox and the call
--   records follow); committed_len is -1 before the first commit
--   {'t', id, seq, lease, task hash fields...}
-- 'W' and 'T' mark a suspect, claimed alone: the dispatcher must run it with nothing else in flight.
local worker, budget = ARGV[2], tonumber(ARGV[3])
local proc = k_proc(worker)
local now = now_ms()
local claims = {}

local function claim_step(id, item)
  local wf = k_wf(id)
  local f = redis.call('HMGET', wf, 'name', 'version', 'status', 'input', 'cache_owner', 'cache_len')
  if not f[1] then return end  -- expired or removed while queued: nothing to run
  local lease = redis.call('INCR', K_SEQ)
  redis.call('HSET', proc, item, lease)
  redis.call('HSET', wf, 'lease', lease)
  local start = -1  -- -1: this dispatcher has no copy in memory; send the whole history
  if f[5] == worker and f[6] then start = tonumber(f[6]) end
  local claim = {'w', id, lease, f[1], f[2], f[3], f[4], start, f[6] or '-1'}
  for _, entry in ipairs(redis.call('LRANGE', k_inbox(id), math.max(start, 0), -1)) do
    table.insert(claim, entry)
  end
  table.insert(claim, '|')
  if start < 0 then
    for _, v in ipairs(redis.call('HGETALL', k_calls(id))) do table.insert(claim, v) end
  end
  table.insert(claims, claim)
end

local function claim_task(id, seq, item)
  local task = k_task(id, seq)
  if redis.call('EXISTS', task) == 0 then return end  -- its workflow finished or was cancelled
  local lease = redis.call('INCR', K_SEQ)
  redis.call('HINCRBY', task, 'attempt', 1)
  redis.call('HSET', task, 'lease', lease)
  redis.call('HSET', proc, item, lease)
  local claim = {'t', id, seq, lease}
  for _, v in ipairs(redis.call('HGETALL', task)) do table.insert(claim, v) end
  table.insert(claims, claim)
end

-- Whether the reaper found this item twice in a row on a dispatcher that died with other work.
local function suspect_of(item)
  local rest = string.sub(item, 3)
  local marks
  if string.sub(item, 1, 1) == 'w' then
    marks = redis.call('HGET', k_wf(rest), 'suspect')
  else
    local sep = string.find(rest, '|[^|]*$')
    marks = redis.call('HGET', k_task(string.sub(rest, 1, sep - 1), string.sub(rest, sep + 1)), 'suspect')
  end
  return tonumber(marks or '0') >= 2
end

-- Put popped items back at the head of their list, in their order, from position `from` on.
local function put_back(list, items, from)
  for k = #items, from, -1 do redis.call('RPUSH', list, items[k]) end
end

for i = 4, #ARGV do
  if budget <= 0 then break end
  local list = ARGV[i]
  local items = redis.call('RPOP', list, budget)
  if items then
    for position, item in ipairs(items) do
      -- A suspect (held by a dispatcher that died with other work) is claimed alone, as the first item of a
      -- claim, flagged in upper case: the dispatcher then runs it by itself, so a crash can be blamed on it.
      local suspect = suspect_of(item)
      if suspect and #claims > 0 then
        put_back(list, items, position)
        budget = 0
        break
      end
      budget = budget - 1
      local kind = string.sub(item, 1, 1)
      if kind == 'w' then
        claim_step(string.sub(item, 3), item)
      else
        local rest = string.sub(item, 3)
        local sep = string.find(rest, '|[^|]*$')
        claim_task(string.sub(rest, 1, sep - 1), string.sub(rest, sep + 1), item)
      end
      if suspect then
        if #claims > 0 then claims[#claims][1] = string.upper(claims[#claims][1]) end
        put_back(list, items, position + 1)
        budget = 0
        break
      end
    end
    if redis.call('LLEN', list) > 0 and redis.call('LLEN', k_wake(list)) == 0 then
      redis.call('LPUSH', k_wake(list), '1')  -- more is waiting: pass the baton to another dispatcher
    end
  end
end
return claims
