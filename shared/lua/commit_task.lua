-- Commit one task attempt: its result, a delayed retry, or its final failure (dead-letter queue).
-- Rejected when the lease is stale: the item was handed to another dispatcher meanwhile.
-- KEYS[1] T; ARGV: G, worker, item, lease, outcome, payload, retry delay ms, hand-off budget.
-- outcome 'ok': payload is the result (JSON); 'retry' (after the delay) and 'fail': payload is the error record.
-- Returns {'ok', claims} | {'retrying', {}} | {'dead', claims, entry id} | {'stale'} | {'gone'} (the call was
-- released meanwhile); claims: the workflow's next step when this dispatcher runs it too (`hand_off`).
local worker, item, lease, outcome, payload = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local handoff = tonumber(ARGV[8])
local _, id, seq = parse_item(item)
local task = k_task(seq, id)
local proc = k_proc(worker)
if redis.call('HGET', proc, item) ~= lease then return {'stale'} end
local t = redis.call('HMGET', task, 'lease', 'wf_shard', 'attempts')
if t[1] ~= lease then
  if not t[1] then
    redis.call('HDEL', proc, item)  -- the call was cancelled or its workflow ended: discard the result
    release_permit(item, now_once())
    return {'gone'}
  end
  return {'stale'}
end
local now = now_once()
redis.call('HDEL', proc, item)
release_permit(item, now)
if outcome == 'ok' then
  redis.call('DEL', task)
  deliver_task_outcome(id, seq, t[2], inbox_ok(seq, payload), 'done', now, tonumber(t[3] or '0') + 1)
  return {'ok', hand_off(worker, handoff)}
end
redis.call('HDEL', task, 'suspect')  -- it ran to the end: not the item that killed its dispatcher
local delay = nil
if outcome == 'retry' then delay = tonumber(ARGV[7]) end
local entry = task_attempt_failed(id, seq, payload, delay, now)
if entry then return {'dead', hand_off(worker, handoff), entry} end
return {'retrying', {}}
