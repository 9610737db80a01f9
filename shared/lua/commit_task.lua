-- Commit one task attempt: its result, a delayed retry, or its final failure (dead-letter queue).
-- Rejected when the lease is stale: the item was handed to another dispatcher meanwhile.
-- KEYS[1] T; ARGV: G, worker, id, seq, lease, outcome ('ok'|'retry'|'fail'), payload, retry delay ms,
-- hand-off budget. payload: for 'ok' the inbox entry (JSON with the result); otherwise the error record.
-- Returns {'ok', claims} | {'dead', claims, entry id} | {'stale'} | {'gone'} (call released meanwhile);
-- claims: the workflow's next step when this dispatcher runs it too (`hand_off`), as claim.lua returns.
local worker, id, seq, lease, outcome, payload = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local handoff = tonumber(ARGV[9]) or 0
local task = k_task(id, seq)
local item = 't|' .. id .. '|' .. seq
local proc = k_proc(worker)
if redis.call('HGET', proc, item) ~= lease then return {'stale'} end
if redis.call('HGET', task, 'lease') ~= lease then
  if redis.call('EXISTS', task) == 0 then
    redis.call('HDEL', proc, item)  -- the call was cancelled or its workflow ended: discard the result
    return {'gone'}
  end
  return {'stale'}
end
local now = now_ms()
redis.call('HDEL', proc, item)
if outcome == 'ok' then
  redis.call('DEL', task)
  deliver(id, seq, payload, 'done', now)
  return {'ok', hand_off(worker, handoff)}
end
if outcome == 'retry' then
  redis.call('HSET', task, 'last_error', payload, 'lease', '0')
  redis.call('HDEL', task, 'suspect')  -- it ran to the end: not the item that killed its dispatcher
  add_timer('r|' .. id .. '|' .. seq, now + tonumber(ARGV[8]))
  return {'ok', {}}
end
local entry = exhaust_task(id, seq, payload, now)
return {'dead', hand_off(worker, handoff), entry}
