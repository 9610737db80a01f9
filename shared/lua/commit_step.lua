-- Commit one workflow step atomically: record its new durable calls, schedule what they need (tasks on
-- ready queues, timers, child workflows, signals), set the status, and finish the workflow when it returned.
-- Rejected when the lease is stale.
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
local calls = k_calls(id)
local signals = 0
local priority = redis.call('HGET', wf, 'priority')

-- A workflow with a concurrency limit took a slot (or queues for one) before its first step ran.
local admission = step.admission
if admission and admission ~= cjson.null then
  redis.call('HSET', wf, 'slot', admission.limit, 'slot_shard', admission.shard)
  if admission.queued then  -- no slot yet: it waits, QUEUED, until one frees (its code has not run)
    redis.call('HSET', wf, 'pending', '0')
    set_status(id, 'QUEUED', admission.text, now)
    return {'ok', {}}
  end
end

for _, c in ipairs(step.calls) do
  local seq = int(c.seq)
  if c.kind == 'value' then
    redis.call('HSET', calls, seq, c.rec)
  elseif c.kind == 'signal' then
    signals = signals + 1
    redis.call('HSET', calls, seq, c.rec, seq .. ':s', 'done', seq .. ':t', int(now), seq .. ':f', int(now))
    local record = signal_record(seq, c.name, payload(c.p), now)
    redis.call('RPUSH', k_signals(id), record)
    push_bus({t = 'signal', id = id, rec = record})  -- the bus publishes it
  else
    redis.call('HSET', calls, seq, c.rec, seq .. ':s', 'pending', seq .. ':t', int(now))
    if c.kind == 'task' or c.kind == 'child' then
      redis.call('HSET', calls, seq .. ':a', payload(c.p))  -- its arguments, kept with the history
    end
    if c.kind == 'task' and (c.limit == nil or c.limit == cjson.null) then
      local task = k_task(seq, id)
      redis.call('HSET', task, 'name', c.name, 'args', payload(c.p), 'queue', c.queue, 'attempts', '0',
        'max_attempts', int(c.max_attempts), 'backoff_ms', int(c.backoff_ms), 'timeout_ms', int(c.timeout_ms),
        'on_exhausted', c.on_exhausted, 'lease', '0')
      if priority then redis.call('HSET', task, 'priority', priority) end  -- a run's tasks inherit its priority
      if c.trace then redis.call('HSET', task, 'trace', c.trace) end  -- its attempts' spans continue it
      push_task(id, seq, now, false)
    elseif c.kind == 'task' then  -- a limited task lives with its limit, in the limit's shard
      local fields = {'name', c.name, 'args', payload(c.p), 'queue', c.queue, 'attempts', '0',
        'max_attempts', int(c.max_attempts), 'backoff_ms', int(c.backoff_ms), 'timeout_ms', int(c.timeout_ms),
        'on_exhausted', c.on_exhausted, 'lease', '0', 'limit', c.limit.id, 'wf_shard', shard_number()}
      if priority then table.insert(fields, 'priority') table.insert(fields, priority) end
      if c.trace then table.insert(fields, 'trace') table.insert(fields, c.trace) end
      route({shard = c.limit.shard, op = 'create_task', id = id, seq = seq, fields = fields, limit = c.limit}, now)
    elseif c.kind == 'sleep' then
      local due = c.due_ms
      if due == nil or due == cjson.null then due = now + c.delay_ms end
      add_timer(timer_call('s', seq, id), due)
    elseif c.kind == 'event' then
      local key = c.key
      if key == cjson.null then key = nil end
      register_wait(id, seq, c.name, key, c.timeout_ms, now)
    elseif c.kind == 'child' then
      route({shard = c.shard, op = 'start_child', id = c.child_id, name = c.name, version = c.version,
        queue = c.queue, input = payload(c.p), parent_id = id, parent_seq = seq, parent_shard = shard_number(),
        priority = tonumber(priority or '0'), trace = c.trace}, now)
    end
  end
end
if signals > 0 then redis.call('HINCRBY', wf, 'step', signals) end

-- Calls the workflow no longer waits for (cancelled, or left pending when it ended): stop their work.
for _, seq in ipairs(step.cancelled) do release_call(id, int(seq), 'cancelled', now) end
for _, seq in ipairs(step.abandon) do release_call(id, int(seq), 'abandoned', now) end

redis.call('HSET', wf, 'cache_owner', worker, 'cache_len', int(based_on))
redis.call('HDEL', wf, 'step_crashes', 'suspect')  -- it ran to the end: not what killed its dispatchers
local outcome = step.outcome
if outcome ~= cjson.null and outcome.status == 'CONTINUED' then
  continue_as_new(id, payload(outcome.p), outcome.next_seq, based_on, now)
  return {'ok', hand_off(worker, handoff)}
end
if outcome ~= cjson.null then
  finish_workflow(id, outcome.status, payload(outcome.p), outcome.error, retention_ms, now)
  return {'finished', hand_off(worker, handoff)}
end
if redis.call('LLEN', k_inbox(id)) > based_on then
  enqueue_step(id, now, true)  -- results arrived while the step ran: run the next step now
elseif tonumber(redis.call('HGET', wf, 'parked') or '0') > 0 then
  redis.call('HSET', wf, 'pending', '0')
  set_status(id, 'PARKED', redis.call('HGET', wf, 'parked_on'), now)
else
  redis.call('HSET', wf, 'pending', '0')
  set_status(id, step.status, step.waiting_on, now)
end
return {'ok', hand_off(worker, handoff)}
