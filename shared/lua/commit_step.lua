-- Commit one workflow step atomically (`apply_step` in lib.lua): record its new durable calls, schedule what
-- they need (tasks on ready queues, timers, child workflows, signals), set the status, and finish the workflow
-- when it returned. Rejected when the lease is stale.
-- KEYS[1] T; ARGV: G, worker, id, lease, based_on, retention ms, hand-off budget, step document (JSON, built by
-- bdurable/wire.py StepDocument), then the document's payloads (a call's `p` is its index, 1-based).
-- based_on is how many inbox entries the step consumed; if more arrived meanwhile the step is re-queued.
-- A step whose outcome is CONTINUED starts the workflow's next run (continue-as-new, see lib.lua).
-- Returns {'ok', claims} | {'finished', claims} | {'stale'}; claims: work this step made ready that the
-- dispatcher takes over at once (`hand_off`, up to the budget), in the format of claim.lua.
local worker, id, lease, based_on = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local retention_ms, handoff = tonumber(ARGV[6]), tonumber(ARGV[7])
RETENTION_MS = retention_ms
local step = cjson.decode(ARGV[8])
local function payload(index) return ARGV[8 + index] end
local wf = k_wf(id)
local proc = k_proc(worker)
local item = item_step(id)
if redis.call('HGET', wf, 'lease') ~= lease or redis.call('HGET', proc, item) ~= lease then
  return {'stale'}
end
local now = now_once()
redis.call('HDEL', proc, item)
defer_wakes()  -- the hand-off below may take what this step queues
return {apply_step(worker, id, based_on, step, payload, now), hand_off(worker, handoff)}
