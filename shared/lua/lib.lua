-- Shared helpers, prepended to every b-durable script when it is loaded (a script cannot include another).
-- Convention: KEYS[1] is the shard's hash tag T ("{prefix:shard}"), ARGV[1] the fleet tag G ("{prefix}").
-- Every key is built from T or G below, mirroring bdurable/keys.py; all keys of one call share T's slot.
-- Scripts validate first and write last: Lua does not roll back, so an error must come before any write.

local T = KEYS[1]
local G = ARGV[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)
  return string.format('%d', n)
end

local function k_wf(id) return T .. ':wf:' .. id end
local function k_calls(id) return T .. ':wf:' .. id .. ':calls' end
local function k_inbox(id) return T .. ':wf:' .. id .. ':inbox' end
local function k_signals(id) return T .. ':wf:' .. id .. ':signals' end
local function k_task(id, seq) return T .. ':task:' .. id .. ':' .. seq end
local function k_task_queue(queue, task) return T .. ':q:' .. queue .. ':' .. task end
local function k_step_queue(queue, name, version) return T .. ':wq:' .. queue .. ':' .. name .. '@' .. version end
local function k_wake(list) return T .. ':wake:' .. list end
local function k_proc(worker) return T .. ':proc:' .. worker end
local function k_holds(worker) return T .. ':holds:' .. worker end
local K_TIMERS = T .. ':timers'
local function k_live(name) return T .. ':live:' .. name end
local K_STEP_QUEUES = T .. ':wqueues'
local function k_index_status(status) return T .. ':idx:s:' .. status end
local K_INDEX_EXPIRE = T .. ':idx:expire'
local K_DLQ = T .. ':dlq'
local function k_dlq_entry(entry) return T .. ':dlq:' .. entry end
local K_SEQ = T .. ':seq'
local function k_events(id) return T .. ':wf:' .. id .. ':events' end
local function k_keyed(name, key) return T .. ':kw:' .. name .. '\t' .. key end
local K_BUS = T .. ':bus'
local function k_bus_proc(bus) return T .. ':bus:proc:' .. bus end
local K_BUS_ALIVE = T .. ':bus:alive'
local K_BUS_WAKE = T .. ':bus:wake'
local K_WORKERS = T .. ':workers'
local K_TASK_QUEUES = T .. ':tqueues'
local K_CANCEL_CHANNEL = G .. ':cancel'
local K_SIGNALS_CHANNEL = G .. ':signals'
local K_TIMERS_CHANNEL = G .. ':timers'
local function ch_workflow(id) return G .. ':wf:' .. id end

local FINISHED = {COMPLETED = true, FAILED = true, CANCELLED = true}

-- Operations on another shard's workflow (a child in another slot, a parent elsewhere) cannot run in this
-- script (one script, one slot): `route` applies them here when the target is this shard, else leaves
-- them on this shard's bus list, and the signal bus carries them over (`x_apply.lua`). Defined below.
local route

-- The shard number encoded in T ("{prefix:N}").
local function shard_number()
  return string.match(T, ':(%d+)}$') or '0'
end

-- The ready lists this script pushed to, in order, once each (for `hand_off`).
local PUSHED, PUSHED_SEEN = {}, {}

-- Push an item on a ready list and leave one wake-up token for a dispatcher blocked on it.
local function push_ready(list, item)
  redis.call('LPUSH', list, item)
  local wake = k_wake(list)
  if redis.call('LLEN', wake) == 0 then
    redis.call('LPUSH', wake, '1')
  end
  if not PUSHED_SEEN[list] then
    PUSHED_SEEN[list] = true
    table.insert(PUSHED, list)
  end
end

-- Claiming (the reliable-queue pattern): an item moves from its ready list into the dispatcher's
-- processing hash with a fresh lease token; a commit must present that token, so work handed to someone
-- else can never be committed by its former holder. Claims, as returned to the dispatcher:
--   {'w', id, lease, name, version, status, input, inbox_start, committed_len, inbox..., '|', calls...}
--   inbox_start is where the dispatcher's cached copy stopped, or -1 (no copy: whole inbox and the call
--   records follow); committed_len is -1 before the first commit
--   {'t', id, seq, lease, task hash fields...}
-- 'W' and 'T' mark a suspect, claimed alone: the dispatcher must run it with nothing else in flight.

local function claim_step(worker, id, item, claims)
  local wf = k_wf(id)
  local f = redis.call('HMGET', wf, 'name', 'version', 'status', 'input', 'cache_owner', 'cache_len')
  if not f[1] then return end  -- expired or removed while queued: nothing to run
  local lease = redis.call('INCR', K_SEQ)
  redis.call('HSET', k_proc(worker), item, lease)
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

local function claim_task(worker, id, seq, item, claims)
  local task = k_task(id, seq)
  if redis.call('EXISTS', task) == 0 then return end  -- its workflow finished or was cancelled
  local lease = redis.call('INCR', K_SEQ)
  redis.call('HINCRBY', task, 'attempt', 1)
  redis.call('HSET', task, 'lease', lease)
  redis.call('HSET', k_proc(worker), item, lease)
  local claim = {'t', id, seq, lease}
  for _, v in ipairs(redis.call('HGETALL', task)) do table.insert(claim, v) end
  table.insert(claims, claim)
end

-- Split a task item's rest ("id|seq") at its last '|' (workflow ids may contain '|').
local function split_task_item(rest)
  local sep = string.find(rest, '|[^|]*$')
  return string.sub(rest, 1, sep - 1), string.sub(rest, sep + 1)
end

-- The hash of a work item ("w|id": its workflow; "t|id|seq": its task call).
local function item_hash(item)
  local rest = string.sub(item, 3)
  if string.sub(item, 1, 1) == 'w' then return k_wf(rest) end
  return k_task(split_task_item(rest))
end

-- Whether the reaper found this item twice in a row on a dispatcher that died with other work.
local function is_suspect(item)
  return tonumber(redis.call('HGET', item_hash(item), 'suspect') or '0') >= 2
end

-- Claim up to `budget` items from one ready list (oldest first) into `claims`; returns the budget left.
-- A suspect is claimed alone, as the first item of a claim, flagged in upper case: the dispatcher then
-- runs it by itself, so a crash can be blamed on it; `no_suspects` leaves suspects for a claim proper
-- (a hand-off cannot know whether its dispatcher is running something else). Leaves a wake-up token when
-- items remain.
local function claim_from(list, worker, budget, claims, no_suspects)
  local items = redis.call('RPOP', list, budget)
  if not items then return budget end
  for position, item in ipairs(items) do
    local suspect = is_suspect(item)
    if suspect and (no_suspects or #claims > 0) then
      for k = #items, position, -1 do redis.call('RPUSH', list, items[k]) end  -- back at the head, in order
      budget = 0
      break
    end
    budget = budget - 1
    local rest = string.sub(item, 3)
    if string.sub(item, 1, 1) == 'w' then
      claim_step(worker, rest, item, claims)
    else
      local id, seq = split_task_item(rest)
      claim_task(worker, id, seq, item, claims)
    end
    if suspect then
      if #claims > 0 then claims[#claims][1] = string.upper(claims[#claims][1]) end
      for k = #items, position + 1, -1 do redis.call('RPUSH', list, items[k]) end
      budget = 0
      break
    end
  end
  if redis.call('LLEN', list) > 0 then
    if redis.call('LLEN', k_wake(list)) == 0 then
      redis.call('LPUSH', k_wake(list), '1')  -- more is waiting: pass the baton to another dispatcher
    end
  else
    redis.call('DEL', k_wake(list))  -- nothing left to wake anyone for
  end
  return budget
end

-- Direct hand-off: a commit that made work ready on lists its own dispatcher listens to claims up to
-- `budget` items of it in the same script, so the next step or task of a workflow starts without a
-- wake-up and a claim round trip. Oldest items first, as a claim would take them; never a suspect.
local function hand_off(worker, budget)
  local claims = {}
  if budget <= 0 or #PUSHED == 0 then return claims end
  local holds = k_holds(worker)
  for _, list in ipairs(PUSHED) do
    if budget <= 0 then break end
    if redis.call('SISMEMBER', holds, list) == 1 then budget = claim_from(list, worker, budget, claims, true) end
  end
  return claims
end

-- Leave a message for the signal bus, and one wake-up token for a bus blocked waiting. Only the bus's
-- script pops messages, one batch at a time and in order, so events to one workflow stay in order
-- whatever the number of buses (a bus never holds a message outside Redis while blocked).
local function push_bus(message)
  redis.call('LPUSH', K_BUS, message)
  if redis.call('LLEN', K_BUS_WAKE) == 0 then redis.call('LPUSH', K_BUS_WAKE, '1') end
end

-- Put a task call on its queue's ready list, noting when (for the queue-age metric).
local function push_task(id, seq, now)
  local task = k_task(id, seq)
  local t = redis.call('HMGET', task, 'queue', 'name')
  redis.call('HSET', task, 'queued_at', int(now))
  push_ready(k_task_queue(t[1], t[2]), 't|' .. id .. '|' .. seq)
end

-- Tell subscribers (result waiters, `bdurable watch`) the workflow's status; a hint, the hash is the truth.
-- A finish carries the output and error texts too (when small), so a result waiter needs no extra read.
local MAX_PUBLISHED_OUTCOME = 65536
local function publish_state(id, wf)
  local s = redis.call('HMGET', wf, 'status', 'step', 'waiting_on', 'output', 'error')
  local message = {status = s[1], step = tonumber(s[2]), waiting_on = s[3]}
  if FINISHED[s[1]] and #(s[4] or '') + #(s[5] or '') <= MAX_PUBLISHED_OUTCOME then
    message.output, message.error = s[4] or '', s[5] or ''
  end
  redis.call('PUBLISH', ch_workflow(id), cjson.encode(message))
end

-- Change status, keeping the per-status index in step.
local function set_status(id, status, waiting_on, now)
  local wf = k_wf(id)
  local old = redis.call('HGET', wf, 'status')
  if old ~= status then
    if old then redis.call('ZREM', k_index_status(old), id) end
    redis.call('ZADD', k_index_status(status), redis.call('HGET', wf, 'created_at'), id)
  end
  redis.call('HSET', wf, 'status', status, 'waiting_on', waiting_on or '', 'updated_at', int(now))
  publish_state(id, wf)
end

-- Who can run name@version: 'yes' if a live dispatcher holds it, 'other' if only other versions of the
-- name are live, 'none' if no dispatcher of that workflow is alive at all (the step then simply waits).
local function version_liveness(name, version, now)
  local live = redis.call('ZRANGEBYSCORE', k_live(name), '(' .. int(now), '+inf')
  if #live == 0 then return 'none' end
  local want = version .. '|'
  for _, member in ipairs(live) do
    if string.sub(member, 1, #want) == want then return 'yes' end
  end
  return 'other'
end

local function halt_version_mismatch(id, name, version, now)
  set_status(id, 'VERSION_MISMATCH', 'no live dispatcher runs ' .. name .. '@' .. version ..
    ' while others run other versions; deploy it, then run `bdurable resume ' .. id .. '`', now)
end

-- Put the workflow's next step on its version's ready list (or halt it when its version is gone).
-- `force` re-queues even when a step is already marked pending (used by recovery and resume).
local function enqueue_step(id, now, force)
  local wf = k_wf(id)
  local f = redis.call('HMGET', wf, 'status', 'pending', 'name', 'version', 'queue')
  if not f[1] or FINISHED[f[1]] then return 0 end
  if f[2] == '1' and not force then return 0 end
  redis.call('HSET', wf, 'pending', '1', 'queued_at', int(now))
  local name, version = f[3], f[4]
  local liveness = version_liveness(name, version, now)
  if liveness == 'other' then
    halt_version_mismatch(id, name, version, now)
    return 0
  end
  local list = k_step_queue(f[5], name, version)
  redis.call('SADD', K_STEP_QUEUES, f[5] .. '\t' .. name .. '\t' .. version)
  push_ready(list, 'w|' .. id)
  local waiting = 'a dispatcher to run its next step'
  if liveness == 'none' then waiting = 'a live dispatcher that runs ' .. name .. '@' .. version end
  set_status(id, 'RUNNING', waiting, now)
  return 1
end

-- Put an item a dispatcher holds back on its ready list, with a new lease so that a late commit from that
-- dispatcher is rejected (a drain that timed out, or a claim whose reply never reached the dispatcher).
local function hand_back(worker, item, now)
  redis.call('HDEL', k_proc(worker), item)
  local hash = item_hash(item)
  if redis.call('EXISTS', hash) == 0 then return end  -- finished, cancelled or expired meanwhile
  redis.call('HSET', hash, 'lease', redis.call('INCR', K_SEQ))
  local rest = string.sub(item, 3)
  if string.sub(item, 1, 1) == 'w' then
    enqueue_step(rest, now, true)
  else
    redis.call('HINCRBY', hash, 'attempt', -1)  -- a handed-back attempt was never tried to its end
    local id, seq = split_task_item(rest)
    push_task(id, seq, now)
  end
end

-- Deliver the result of durable call `seq` (an inbox entry, JSON built by Python) unless it was already
-- resolved: the check makes every delivery idempotent, so a timer racing a result never delivers twice.
local function deliver(id, seq, entry, final_status, now)
  local wf = k_wf(id)
  local status = redis.call('HGET', wf, 'status')
  if not status or FINISHED[status] then return 0 end
  local calls = k_calls(id)
  if redis.call('HGET', calls, seq .. ':s') ~= 'pending' then return 0 end
  redis.call('HSET', calls, seq .. ':s', final_status, seq .. ':f', int(now))
  redis.call('RPUSH', k_inbox(id), entry)
  redis.call('HINCRBY', wf, 'step', 1)
  enqueue_step(id, now, false)
  return 1
end

-- Add a timer; wake the scheduler only when it becomes the earliest (it sleeps until the earliest).
local function add_timer(member, due)
  local first = redis.call('ZRANGE', K_TIMERS, 0, 0, 'WITHSCORES')
  redis.call('ZADD', K_TIMERS, int(due), member)
  if #first == 0 or tonumber(first[2]) > due then
    redis.call('PUBLISH', K_TIMERS_CHANNEL, int(due))
  end
end

-- Create a workflow record and queue its first step. Returns 'created', or the existing workflow's name.
local function create_workflow(id, name, version, queue, input, parent_id, parent_seq, parent_shard, now)
  local wf = k_wf(id)
  local existing = redis.call('HGET', wf, 'name')
  if existing then return existing end
  -- Only what is known now: absent fields read as their defaults (no parent, nothing parked, no lease yet),
  -- which keeps a waiting workflow's footprint small.
  redis.call('HSET', wf, 'name', name, 'version', version, 'queue', queue, 'input', input, 'status', 'RUNNING',
    'step', '0', 'created_at', int(now), 'updated_at', int(now))
  if parent_id ~= '' then
    redis.call('HSET', wf, 'parent_id', parent_id, 'parent_seq', parent_seq, 'parent_shard', parent_shard)
  end
  redis.call('ZADD', k_index_status('RUNNING'), int(now), id)
  enqueue_step(id, now, false)
  return 'created'
end

-- Finish a workflow: final status, output or error, expiry of all its keys after the retention period,
-- cleanup of what it still waited on, and delivery of its result to its parent.
local function finish_workflow(id, status, output, error_json, retention_ms, now)
  local wf = k_wf(id)
  redis.call('HSET', wf, 'output', output, 'error', error_json, 'pending', '0', 'finished_at', int(now))
  set_status(id, status, '', now)
  local expire_at = now + retention_ms
  for _, key in ipairs({wf, k_calls(id), k_inbox(id), k_signals(id), k_events(id)}) do
    redis.call('PEXPIREAT', key, int(expire_at))
  end
  redis.call('ZADD', K_INDEX_EXPIRE, int(expire_at), id)
  local parent = redis.call('HMGET', wf, 'parent_id', 'parent_seq', 'parent_shard')
  if parent[1] and parent[1] ~= '' then
    local entry
    if status == 'COMPLETED' then
      entry = '{"seq":' .. parent[2] .. ',"ok":true,"v":' .. output .. '}'
    else
      local e = cjson.decode(error_json)
      entry = cjson.encode({seq = tonumber(parent[2]), ok = false, err = {type = 'ChildWorkflowError',
        workflow_id = id, error_type = e['type'], message = e['message']}})
    end
    route({shard = parent[3] or shard_number(), op = 'deliver', id = parent[1], seq = parent[2], entry = entry,
      status = status == 'COMPLETED' and 'done' or 'failed'}, now)
  end
end


-- A task has failed for good: write its dead-letter entry, then either fail the workflow's call with
-- TaskFailedError or park the workflow on the entry until an operator retries or fails it.
local function exhaust_task(id, seq, error_json, now)
  local task = k_task(id, seq)
  local t = redis.call('HMGET', task, 'name', 'args', 'attempt', 'on_exhausted')
  local entry_id = shard_number() .. '-' .. redis.call('INCR', K_SEQ)
  local parked = t[4] == 'park'
  redis.call('HSET', k_dlq_entry(entry_id), 'workflow_id', id, 'seq', seq, 'task', t[1], 'args', t[2],
    'error', error_json, 'attempts', t[3], 'parked', parked and '1' or '0', 'created_at', int(now))
  redis.call('ZADD', K_DLQ, int(now), entry_id)
  if parked then
    local wf = k_wf(id)
    local text = 'dead-letter entry ' .. entry_id .. ' (task ' .. t[1] .. ' failed after ' .. t[3] ..
      ' attempts); run `bdurable dlq retry ' .. entry_id .. '` or `bdurable dlq fail ' .. entry_id .. '`'
    redis.call('HINCRBY', wf, 'parked', 1)
    redis.call('HSET', wf, 'parked_on', text)
    redis.call('HSET', task, 'lease', '0', 'dlq_entry', entry_id)
    set_status(id, 'PARKED', text, now)
    return entry_id
  end
  local e = cjson.decode(error_json)
  local entry = cjson.encode({seq = tonumber(seq), ok = false, err = {type = 'TaskFailedError', task_name = t[1],
    attempts = tonumber(t[3]), error_type = e['type'], message = e['message']}})
  redis.call('DEL', task)
  deliver(id, seq, entry, 'failed', now)
  return entry_id
end


-- Remove `seq` from the space-separated list of waiters on an unkeyed event.
local function drop_waiter(id, name, seq)
  local wf = k_wf(id)
  local field = 'w:' .. name
  local kept = {}
  for s in string.gmatch(redis.call('HGET', wf, field) or '', '%S+') do
    if s ~= seq then table.insert(kept, s) end
  end
  if #kept == 0 then redis.call('HDEL', wf, field) else redis.call('HSET', wf, field, table.concat(kept, ' ')) end
end

-- Register a wait for an event; a matching event already buffered is delivered at once.
local function register_wait(id, seq, name, key, timeout_ms, now)
  if key then
    redis.call('SADD', k_keyed(name, key), id .. '|' .. seq)
  else
    local buffer = k_events(id)
    local head = name .. '\n'
    for _, entry in ipairs(redis.call('LRANGE', buffer, 0, -1)) do
      if string.sub(entry, 1, #head) == head then
        redis.call('LREM', buffer, 1, entry)
        deliver(id, seq, '{"seq":' .. seq .. ',"ok":true,"v":' .. string.sub(entry, #head + 1) .. '}', 'done', now)
        return
      end
    end
    local wf = k_wf(id)
    local field = 'w:' .. name
    local waiting = redis.call('HGET', wf, field)
    redis.call('HSET', wf, field, waiting and (waiting .. ' ' .. seq) or seq)
  end
  if timeout_ms and timeout_ms > 0 then add_timer('e|' .. id .. '|' .. seq, now + timeout_ms) end
end

-- Forget the registration of an event wait (after a timeout, or when the call is released).
local function unregister_wait(id, seq, record)
  if record.key and record.key ~= cjson.null then
    redis.call('SREM', k_keyed(record.n, record.key), id .. '|' .. seq)
  else
    drop_waiter(id, record.n, seq)
  end
  redis.call('ZREM', K_TIMERS, 'e|' .. id .. '|' .. seq)
end

local request_cancel

-- A pending call the workflow no longer waits for (it was cancelled, or the workflow ended): stop the
-- work behind it. Idempotent: only a call still 'pending' is released.
local function release_call(id, seq, why, now)
  local calls = k_calls(id)
  if redis.call('HGET', calls, seq .. ':s') ~= 'pending' then return end
  redis.call('HSET', calls, seq .. ':s', why, seq .. ':f', int(now))
  local record = cjson.decode(redis.call('HGET', calls, seq))
  if record.k == 'task' then
    local task = k_task(id, seq)
    local entry = redis.call('HGET', task, 'dlq_entry')
    if entry then
      redis.call('HINCRBY', k_wf(id), 'parked', -1)
      redis.call('HSET', k_dlq_entry(entry), 'parked', '0')
    end
    redis.call('DEL', task)
    redis.call('ZREM', K_TIMERS, 'r|' .. id .. '|' .. seq)
    redis.call('PUBLISH', K_CANCEL_CHANNEL, id .. '|' .. seq)  -- a dispatcher running it stops it
  elseif record.k == 'sleep' then
    redis.call('ZREM', K_TIMERS, 's|' .. id .. '|' .. seq)
  elseif record.k == 'event' then
    unregister_wait(id, seq, record)
  elseif record.k == 'child' then
    route({shard = record.shard or shard_number(), op = 'cancel', id = record.id,
      reason = 'parent workflow ' .. id .. ' was cancelled or ended'}, now)
  end
end

-- Ask a workflow to cancel: a cancel entry in its inbox makes the replay raise WorkflowCancelledError
-- at the awaits where it waits. Cancelling twice, or a finished workflow, changes nothing.
request_cancel = function(id, reason, now)
  local wf = k_wf(id)
  local s = redis.call('HMGET', wf, 'status', 'cancel_requested')
  if not s[1] or FINISHED[s[1]] or s[2] == '1' then return 0 end
  redis.call('HSET', wf, 'cancel_requested', '1', 'cancel_reason', reason)
  redis.call('RPUSH', k_inbox(id), cjson.encode({cancel = reason}))
  enqueue_step(id, now, false)
  return 1
end


-- Halt queued steps of versions no live dispatcher runs while other versions of the workflow are live.
local function sweep_versions(now)
  local halted = 0
  for _, member in ipairs(redis.call('SMEMBERS', K_STEP_QUEUES)) do
    local queue, name, version = string.match(member, '^(.-)\t(.-)\t(.*)$')
    local list = k_step_queue(queue, name, version)
    if redis.call('LLEN', list) == 0 then
      redis.call('SREM', K_STEP_QUEUES, member)
    elseif version_liveness(name, version, now) == 'other' then
      for _, item in ipairs(redis.call('LRANGE', list, 0, -1)) do
        local id = string.sub(item, 3)
        if redis.call('EXISTS', k_wf(id)) == 1 then
          halt_version_mismatch(id, name, version, now)
          halted = halted + 1
        end
      end
      redis.call('DEL', list, k_wake(list))
      redis.call('SREM', K_STEP_QUEUES, member)
    end
  end
  return halted
end


-- Apply a cross-shard operation on this shard (idempotent: the bus may carry one twice after a crash).
local function apply_x(m, now)
  if m.op == 'deliver' then
    deliver(m.id, m.seq, m.entry, m.status, now)
  elseif m.op == 'cancel' then
    request_cancel(m.id, m.reason, now)
  elseif m.op == 'start_child' then
    local created = create_workflow(m.id, m.name, m.version, m.queue, m.input, m.parent_id, m.parent_seq,
      m.parent_shard, now)
    if created ~= 'created' then
      local f = redis.call('HMGET', k_wf(m.id), 'parent_id', 'parent_seq')
      if f[1] ~= m.parent_id or f[2] ~= m.parent_seq then  -- not a replay of our own start: a conflict
        route({shard = m.parent_shard, op = 'deliver', id = m.parent_id, seq = m.parent_seq, status = 'failed',
          entry = cjson.encode({seq = tonumber(m.parent_seq), ok = false, err = {type = 'ChildWorkflowError',
            workflow_id = m.id, error_type = 'WorkflowAlreadyExistsError',
            message = 'workflow id ' .. m.id .. ' is already used'}})}, now)
      end
    end
  end
end

route = function(m, now)
  if tostring(m.shard) == shard_number() then
    apply_x(m, now)
  else
    m.t = 'x'
    m.shard = tostring(m.shard)
    push_bus(cjson.encode(m))
  end
end
