-- Commit one task attempt: its result, a delayed retry, or its final failure (dead-letter queue).
-- Rejected when the lease is stale: the item was handed to another dispatcher meanwhile.
-- KEYS[1] T; ARGV: G, worker, item, lease, outcome, payload, retry delay ms, hand-off budget, then the step that
-- follows ('' when none): based_on, retention ms, step document, its payloads (as in commit_step.lua).
-- outcome 'ok': payload is the result (JSON); 'retry' (after the delay) and 'fail': payload is the error record.
-- The step that follows is the workflow's next step, which the dispatcher already ran on its cached copy of the
-- run with this result: it commits here too when `step_follows` (lib.lua) says the copy was current, which
-- saves the step its own claim and commit; else the result is delivered as usual and the step runs again.
-- Returns {'ok', claims} | {'retrying', {}} | {'dead', claims, entry id} | {'stale'} | {'gone'} (the call was
-- released meanwhile) | {'ok' or 'finished', claims, '', 'step'} (the step that follows committed too);
-- claims: the work this made ready that this dispatcher runs too (`hand_off`).
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
  defer_wakes()  -- the hand-off below may take what this queues
  redis.call('DEL', task)
  local entry, attempts = inbox_ok(seq, payload), tonumber(t[3] or '0') + 1
  local based_on = tonumber(ARGV[9] or '')
  if based_on and (not t[2] or t[2] == shard_number()) and step_follows(worker, id, seq, based_on) then
    record_delivery(id, seq, entry, 'done', now, attempts, true)
    RETENTION_MS = tonumber(ARGV[10])
    local function payload_of(index) return ARGV[11 + index] end
    local status = apply_step(worker, id, based_on, cjson.decode(ARGV[11]), payload_of, now)
    return {status, hand_off(worker, handoff), '', 'step'}
  end
  deliver_task_outcome(id, seq, t[2], entry, 'done', now, attempts)
  return {'ok', hand_off(worker, handoff)}
end
redis.call('HDEL', task, 'suspect')  -- it ran to the end: not the item that killed its dispatcher
local delay = nil
if outcome == 'retry' then delay = tonumber(ARGV[7]) end
local entry = task_attempt_failed(id, seq, payload, delay, now)
if entry then return {'dead', hand_off(worker, handoff), entry} end
return {'retrying', {}}
