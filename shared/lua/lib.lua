-- Shared helpers of every b-durable script: one Redis Function library holds them and every script (each a
-- function of it); where functions cannot be used, each script is sent with its own copy (EVALSHA).
-- Before this library come the helpers generated from bdurable/keys.py (every key and channel: `k_wf(id)`,
-- `K_TIMERS`, `ch_workflow(id)`, ...) and the clock `now_ms()`; see bdurable/lua/__init__.py. State that lives
-- for one call only (the clock read, the caches below) is reset by `begin_call` (at the end) before each call.
-- Convention: KEYS[1] is the shard's hash tag T ("{prefix:shard}"), ARGV[1] the fleet tag G ("{prefix}"); all
-- keys of one call share T's slot.
-- Scripts validate first and write last: Lua does not roll back, so an error must come before any write.

local function int(n)
  return string.format('%d', n)
end

local FINISHED = {COMPLETED = true, FAILED = true, CANCELLED = true}

-- A time (ms since the epoch) as ISO 8601 UTC text to the second, for what people read (`waiting_on`); the
-- date from the day number by H. Hinnant's civil_from_days (Lua in Redis has no os.date).
local function utc_text(ms)
  local seconds = math.floor(ms / 1000)
  local days = math.floor(seconds / 86400)
  local rest = seconds - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02dZ', year, month, day, math.floor(rest / 3600),
    math.floor(rest % 3600 / 60), rest % 60)
end

-- Defined further down, used before: operations on another shard (`route`), timers, limits.
local route, add_timer, wake_held

-- The retention of finished workflows, for the scripts that may finish one outside a commit (a cancelled
-- workflow that never started); set by those scripts from their arguments.
local RETENTION_MS = 7 * 86400000

-- The shard number encoded in T ("{prefix:N}").
local function shard_number()
  return string.match(T, ':(%d+)}$') or '0'
end

-- The clock, read at most once per script (by the first code that needs it).
local NOW
local function now_once()
  if not NOW then NOW = now_ms() end
  return NOW
end

-- ==== records: one builder each (their Python readers are in bdurable/wire.py) ===============================

-- Work items, the members of ready queues and processing hashes: 'w|<id>' (a step), 't|<seq>|<id>' (a task).
local function item_step(id) return 'w|' .. id end
local function item_task(seq, id) return 't|' .. seq .. '|' .. id end
-- A call of a task with a concurrency or rate limit: its item says so, so that nothing else pays for limits.
local function item_limited(seq, id) return 'l|' .. seq .. '|' .. id end

-- (kind, id, seq) of a work item ('w', 't' or 'l'); seq is nil for a step. Ids come last: they may contain
-- anything.
local function parse_item(item)
  local kind = string.sub(item, 1, 1)
  if kind == 'w' then return 'w', string.sub(item, 3), nil end
  local sep = string.find(item, '|', 3, true)
  return kind, string.sub(item, sep + 1), string.sub(item, 3, sep - 1)
end

-- A durable call of a workflow, '<seq>|<id>' (keyed waiters, the cancel channel), and its parser.
local function call_ref(seq, id) return seq .. '|' .. id end
local function parse_call_ref(ref)
  local sep = string.find(ref, '|', 1, true)
  return string.sub(ref, sep + 1), string.sub(ref, 1, sep - 1)  -- id, seq
end

-- Timers of durable calls: 's' a sleep, 'r' a delayed retry, 'e' an event wait's timeout.
local function timer_call(kind, seq, id) return kind .. '|' .. call_ref(seq, id) end
local function parse_timer(member)
  local id, seq = parse_call_ref(string.sub(member, 3))
  return string.sub(member, 1, 1), id, seq
end

-- Who runs a workflow version ('<version>|<worker>'), and the ready queues a shard has (for sweeps, gauges).
local function live_member(version, worker) return version .. '|' .. worker end
local function step_queue_member(queue, name, version) return queue .. '\t' .. name .. '\t' .. version end
local function parse_step_queue_member(member) return string.match(member, '^(.-)\t(.-)\t(.*)$') end
local function task_queue_member(queue, task) return queue .. '\t' .. task end
local function kind_member(name, version) return name .. '\t' .. version end
local function parse_kind_member(member) return string.match(member, '^(.-)\t(.*)$') end
local function parse_task_queue_member(member) return string.match(member, '^(.-)\t(.*)$') end

-- Inbox entries: what a workflow receives. Payloads are JSON text, embedded as they are.
local function inbox_ok(seq, payload) return '{"seq":' .. seq .. ',"ok":true,"v":' .. payload .. '}' end
local function inbox_error(seq, error_json) return '{"seq":' .. seq .. ',"ok":false,"err":' .. error_json .. '}' end
local function inbox_cancel(reason) return cjson.encode({cancel = reason}) end

-- Error records {type, message, traceback, ...}: the engine's own errors.
local function error_record(kind, message, extra)
  local record = extra or {}
  record.type, record.message, record.traceback = kind, message, ''
  return cjson.encode(record)
end

-- A wrapping error (TaskFailedError, ChildWorkflowError) around the error record `cause_json`: the cause's
-- message and type (as error_type), plus the wrapper's own fields.
local function wrap_error(kind, cause_json, extra)
  local cause = cjson.decode(cause_json)
  extra.error_type = cause['type']
  return error_record(kind, cause['message'], extra)
end

local function signal_record(seq, name, payload, at)
  return '{"seq":' .. seq .. ',"name":' .. cjson.encode(name) .. ',"payload":' .. payload .. ',"at":' .. int(at) .. '}'
end

-- An event kept for a later wait: 'name\npayload' (event names hold no newline).
local function event_entry(name, payload) return name .. '\n' .. payload end

-- ==== ready queues ============================================================================================
-- A ready queue is a sorted set: higher priority first, then first in, first out (a per-shard order counter).
-- Steps of one workflow version have two: continuations (steps of workflows already running, including a
-- child's first step) and new starts; claims serve continuations first (see `claim.lua`). Tasks are always
-- continuations. One wake-up token per queue (keyed by its continuation set) wakes a blocked dispatcher.

local PRIORITY_MAX = 1000
local ORDER_SPAN = 4398046511104  -- 2^42 orders per priority: scores stay exact doubles (below 2^53)

local function ready_score(priority, order)
  return (PRIORITY_MAX - (priority or 0)) * ORDER_SPAN + order
end

-- A batch of starts takes its places in line with one INCRBY instead of one INCR per workflow: `orders_ahead`
-- says how many it may need, and the first order taken reserves them all (an order reserved and not used
-- leaves a gap, which changes no one's place in line). Nothing is reserved before a workflow is created, so a
-- batch of ids that all exist changes nothing.
local ORDERS_AHEAD, ORDER_NEXT, ORDER_LAST = 0, nil, nil

local function orders_ahead(count)
  ORDERS_AHEAD = count
end

local function next_order()
  if ORDER_NEXT and ORDER_NEXT <= ORDER_LAST then
    ORDER_NEXT = ORDER_NEXT + 1
    return ORDER_NEXT - 1
  end
  if ORDERS_AHEAD > 1 then
    ORDER_LAST = redis.call('INCRBY', K_ORDER, ORDERS_AHEAD)
    ORDER_NEXT = ORDER_LAST - ORDERS_AHEAD + 2
    ORDERS_AHEAD = 0
    return ORDER_NEXT - 1
  end
  return redis.call('INCR', K_ORDER)
end

-- A batch of starts adds to each sorted set (the ids, an index, a ready queue) once at its end, a hundred
-- members in one ZADD instead of a hundred ZADDs (`defer_zadds`, then `flush_zadds` before the script returns).
-- Only additions that nothing in the same call reads back or removes are deferred (see `create_workflow`).
local DEFERRED, DEFERRED_KEYS = nil, {}

local function zadd(key, score, member)
  if not DEFERRED then
    redis.call('ZADD', key, score, member)
    return
  end
  local args = DEFERRED[key]
  if not args then
    args = {}
    DEFERRED[key] = args
    DEFERRED_KEYS[#DEFERRED_KEYS + 1] = key
  end
  args[#args + 1] = score
  args[#args + 1] = member
end

local function defer_zadds()
  DEFERRED, DEFERRED_KEYS = {}, {}
end

local ZADD_CHUNK = 1000  -- arguments per ZADD, well below what Lua may unpack at once

local function flush_zadds()
  for _, key in ipairs(DEFERRED_KEYS) do
    local args = DEFERRED[key]
    for first = 1, #args, ZADD_CHUNK do
      redis.call('ZADD', key, unpack(args, first, math.min(first + ZADD_CHUNK - 1, #args)))
    end
  end
  DEFERRED, DEFERRED_KEYS = nil, {}
end

-- The continuation sets this script pushed to, in order, once each (for `hand_off`).
local PUSHED, PUSHED_SEEN = {}, {}

-- The wake-up tokens this call already left (a batch of starts queues many items on one queue; a token taken
-- meanwhile can only be taken by a dispatcher, after this script).
local WOKEN = {}

-- A commit that hands work off to its own dispatcher (`hand_off`) defers its wake-up tokens until then: the
-- hand-off usually takes what the commit queued, and a token left for it would only be taken back at once.
-- `defer_wakes` starts deferring; `hand_off` ends it and leaves the tokens still needed.
local WAKES_DEFERRED, WAKES_DEFERRED_SEEN = nil, nil

local function defer_wakes()
  WAKES_DEFERRED, WAKES_DEFERRED_SEEN = {}, {}
end

local function wake(queue)
  local token = k_wake(queue)
  if WOKEN[token] then return end
  if WAKES_DEFERRED then
    if not WAKES_DEFERRED_SEEN[queue] then
      WAKES_DEFERRED_SEEN[queue] = true
      table.insert(WAKES_DEFERRED, queue)
    end
    return
  end
  if redis.call('LLEN', token) == 0 then redis.call('LPUSH', token, '1') end
  WOKEN[token] = true
end

-- Put an item on `list`, a set of the queue whose continuation set is `queue`, and wake a dispatcher.
local function push_ready(list, queue, item, priority, order)
  zadd(list, int(ready_score(priority, order)), item)
  wake(queue)
  if list == queue and not PUSHED_SEEN[list] then
    PUSHED_SEEN[list] = true
    table.insert(PUSHED, list)
  end
end

-- After items were taken: keep one token while anything waits in the queue, none once it is empty.
local function rewake(queue, new_starts)
  if redis.call('ZCARD', queue) > 0 or (new_starts ~= '' and redis.call('ZCARD', new_starts) > 0) then
    wake(queue)
  else
    local token = k_wake(queue)
    redis.call('DEL', token)
    WOKEN[token] = nil
  end
end

-- The hash of a work item (a step's workflow, a task's call).
local function item_hash(item)
  local kind, id, seq = parse_item(item)
  if kind == 'w' then return k_wf(id) end
  return k_task(seq, id)
end

-- Whether the reaper found this item twice in a row on a dispatcher that died with other work.
local function is_suspect(item)
  return tonumber(redis.call('HGET', item_hash(item), 'suspect') or '0') >= 2
end

-- ==== work set aside ==========================================================================================
-- A key of the wrong type under the prefix (written by hand or by another program), or data this code cannot
-- read, makes a Redis command fail inside a script. The scripts that work through a batch (claims, the reaper,
-- timers, the signal bus) run each item under `pcall` (`isolated`): a failing item is set aside and retried by
-- a timer a minute later, again until it works, and the rest of the batch goes on. Without it one such key
-- would stall its shard (every claim failing on it, every reaper pass on a dead dispatcher holding it), lose
-- the timer that failed (taken off the timers first), or lose every bus message popped with it. What the
-- failed item did before the error stays, as in any failed script. `T:faults` says what waits and why.
local SET_ASIDE_MS = 60000

local function error_text(err)
  if type(err) == 'table' then return tostring(err.err or err.msg or cjson.encode(err)) end
  return tostring(err)
end

-- Set work aside: `member` is the timer that retries it ('f|<item>' puts an item back on its ready queue,
-- 'b|<seq>|<message>' a bus message back on the bus (`bus_retry`), any other timer fires again).
local function set_aside(member, err)
  local now = now_once()
  add_timer(member, now + SET_ASIDE_MS)
  redis.call('HSET', K_FAULTS, member, cjson.encode({error = error_text(err), at = now}))
  redis.call('HINCRBY', K_STATS, 'set_aside', 1)
end

-- Run `fn(...)` for one item of a batch; on an error, set the work aside (see above) and return false.
local function isolated(member, fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then set_aside(member, err) end
  return ok, err
end

-- ==== claiming ================================================================================================
-- The reliable-queue pattern: an item moves from its ready queue into the dispatcher's processing hash with
-- a fresh lease token; a commit must present that token, so work handed to someone else can never be
-- committed by its former holder. Claims, as returned to the dispatcher (decoded by bdurable/wire.py):
--   {'w', suspect, id, lease, name, version, input, inbox_start, committed_len, {inbox entries}, {calls}, priority,
--    traceparent}
--     inbox_start is where the dispatcher's cached copy stopped, or -1 (no copy: the whole inbox and the call
--     records follow); committed_len is -1 before the first commit
--   {'t', suspect, id, seq, lease, {task hash fields}}
-- suspect = 1 marks an item claimed alone: the dispatcher must run it with nothing else in flight.

local function claim_step(worker, id, item, suspect, claims)
  local wf = k_wf(id)
  local f = redis.call('HMGET', wf, 'name', 'version', 'input', 'cache_owner', 'cache_len', 'priority', 'seq_base',
    'trace')
  if not f[1] then return end  -- expired or removed while queued: nothing to run
  local lease = redis.call('INCR', K_SEQ)
  redis.call('HSET', k_proc(worker), item, lease)
  redis.call('HSET', wf, 'lease', lease)
  local start = -1  -- -1: this dispatcher has no copy in memory; send the whole history
  if f[4] == worker and f[5] then start = tonumber(f[5]) end
  local calls = {}
  if start < 0 then calls = redis.call('HGETALL', k_calls(id)) end
  table.insert(claims, {'w', suspect and 1 or 0, id, lease, f[1], f[2], f[3], start, f[5] or '-1',
    redis.call('LRANGE', k_inbox(id), math.max(start, 0), -1), calls, tonumber(f[6] or '0'), tonumber(f[7] or '0'),
    f[8] or ''})
end

local function claim_task(worker, id, seq, item, suspect, claims)
  local task = k_task(seq, id)
  local fields = redis.call('HGETALL', task)
  if #fields == 0 then return end  -- its workflow finished or was cancelled
  local lease = redis.call('INCR', K_SEQ)
  redis.call('HSET', task, 'lease', lease)
  redis.call('HSET', k_proc(worker), item, lease)
  local at = #fields + 1  -- the fields as they are now, with the new lease
  for i = 1, #fields, 2 do
    if fields[i] == 'lease' then at = i end
  end
  fields[at], fields[at + 1] = 'lease', int(lease)
  table.insert(claims, {'t', suspect and 1 or 0, id, seq, lease, fields})
end

-- ==== flow control: the limits of a task (its permits, its sliding window, its held-back calls) =============
-- A limit is identified by a string (`bdurable.wire.limit_id`: the task's name and the call's key) and lives in
-- the shard its id hashes to, with the calls it limits: every check is local to one script.

-- How many more attempts may start now, what holds the rest back ('concurrency' or 'rate'), and when the
-- sliding window next frees a place (ms, for 'rate').
local function limit_room(limit, now)
  local s = redis.call('HMGET', k_limit(limit), 'concurrency', 'rate_n', 'rate_ms')
  local room, reason, free_at = 1000000000, nil, nil
  if s[1] then
    room, reason = tonumber(s[1]) - redis.call('SCARD', k_permits(limit)), 'concurrency'
  end
  if s[2] then
    local window = k_rate(limit)
    redis.call('ZREMRANGEBYSCORE', window, '-inf', int(now - tonumber(s[3])))
    local rate_room = tonumber(s[2]) - redis.call('ZCARD', window)
    if rate_room < room then
      room, reason = rate_room, 'rate'
      local oldest = redis.call('ZRANGE', window, 0, 0, 'WITHSCORES')
      free_at = #oldest > 0 and tonumber(oldest[2]) + tonumber(s[3]) or now
    end
  end
  return room, reason, free_at
end

-- An attempt of a limited call starts: it holds a permit until it ends, and counts in the window.
local function take_permit(item, limit, now)
  redis.call('SADD', k_permits(limit), item)
  redis.call('HSET', K_PERMIT_OF, item, limit)
  if redis.call('HEXISTS', k_limit(limit), 'rate_n') == 1 then
    redis.call('ZADD', k_rate(limit), int(now), item .. '@' .. int(now))
  end
end

-- An attempt of a limited call ended (committed, handed back, lost with its dispatcher): its permit frees, and
-- the call held back longest takes it. A no-op for every other item (no Redis command at all).
local function release_permit(item, now)
  if string.sub(item, 1, 1) ~= 'l' then return end
  local limit = redis.call('HGET', K_PERMIT_OF, item)
  if not limit then return end
  redis.call('SREM', k_permits(limit), item)
  redis.call('HDEL', K_PERMIT_OF, item)
  wake_held(limit, now)
end

-- Tell a workflow (maybe in another shard) what its call waits for, while it waits.
local function note_waiting(id, seq, wf_shard, text)
  route({shard = wf_shard or shard_number(), op = 'note', id = id, seq = seq, text = text}, now_once())
end

-- Claim a limited call if its limit has room; else hold it back (it keeps its place: its ready score) until a
-- permit frees or the window moves (a timer). Returns whether it was held back.
local function claim_limited(worker, id, seq, item, suspect, claims, score)
  local task = k_task(seq, id)
  local t = redis.call('HMGET', task, 'limit', 'name', 'wf_shard')
  if not t[1] then return false end  -- its workflow finished or the call was released: consumed
  local now = now_once()
  local room, reason, free_at = limit_room(t[1], now)
  if room <= 0 then
    local text = 'task ' .. t[2] .. ' (held back by its ' .. reason .. ' limit' ..
      (redis.call('HGET', k_limit(t[1]), 'key') or '') .. ')'
    note_waiting(id, seq, t[3], text)  -- first: it touches the workflow's keys, which may fail (work set aside)
    redis.call('ZADD', k_held(t[1]), score, item)
    redis.call('SADD', K_LIMITS, t[1])
    redis.call('HINCRBY', K_STATS, 'throttled\t' .. t[2] .. '\t' .. reason, 1)
    if reason == 'rate' then add_timer('l|' .. t[1], free_at) end
    return true
  end
  take_permit(item, t[1], now)
  claim_task(worker, id, seq, item, suspect, claims)
  return false
end

-- Returns whether the item was held back by a limit (then it does not count against the claim's budget).
local function claim_item(worker, item, suspect, claims, score)
  local kind, id, seq = parse_item(item)
  if kind == 'w' then
    claim_step(worker, id, item, suspect, claims)
  elseif kind == 't' then
    claim_task(worker, id, seq, item, suspect, claims)
  else
    return claim_limited(worker, id, seq, item, suspect, claims, score)
  end
  return false
end

-- Claim up to `budget` items from `lists`, best first across all of them (highest priority, then oldest).
-- A suspect is claimed alone, as the first item of a claim, which then ends; `no_suspects` leaves suspects
-- for a claim proper (a hand-off cannot know what else its dispatcher runs). Returns (items taken, stop, more):
-- `more` when a list may still hold items (its window was left unfinished, or was as long as the budget); every
-- other list was read to its end, each of its items taken.
local function take_ordered(lists, worker, budget, claims, no_suspects)  -- items held back by limits do not count
  if budget <= 0 then return 0, false, false end
  local windows = {}
  for _, list in ipairs(lists) do
    local head = redis.call('ZRANGE', list, 0, budget - 1, 'WITHSCORES')
    if #head > 0 then table.insert(windows, {list = list, head = head, at = 1, taken = {}}) end
  end
  local count, stop = 0, false
  while count < budget do
    local best
    for _, w in ipairs(windows) do
      if w.at < #w.head and (not best or tonumber(w.head[w.at + 1]) < tonumber(best.head[best.at + 1])) then
        best = w
      end
    end
    if not best then break end
    local item = best.head[best.at]
    local readable, suspect = pcall(is_suspect, item)
    if readable and suspect and (no_suspects or #claims > 0) then stop = true break end  -- first: its own claim
    local score = best.head[best.at + 1]
    best.at = best.at + 2
    table.insert(best.taken, item)
    if not readable then
      set_aside('f|' .. item, suspect)
    else
      local claimed, held_back = isolated('f|' .. item, claim_item, worker, item, suspect, claims, score)
      if not claimed then  -- undo the lease it may have taken; the claim record is added last, never half
        redis.call('HDEL', k_proc(worker), item)
        release_permit(item, now_once())
      elseif not held_back then
        count = count + 1
      end
      if suspect then stop = true break end
    end
  end
  local more = false
  for _, w in ipairs(windows) do
    if #w.taken > 0 then redis.call('ZREM', w.list, unpack(w.taken)) end
    if w.at < #w.head or #w.head >= 2 * budget then more = true end
  end
  return count, stop, more
end

-- Direct hand-off: a commit that made work ready on queues its own dispatcher listens to claims up to `budget`
-- items of them in the same script, so the next step or task of a workflow starts without a wake-up and a
-- claim round trip. Continuations only, best first as a claim would take them (never jumping the queue);
-- never a suspect. `T:holds:<worker>` maps each continuation set the dispatcher listens to onto its
-- new-start set ('' for task queues), for the wake-up token.
local function hand_off(worker, budget)
  local deferred = WAKES_DEFERRED or {}
  WAKES_DEFERRED, WAKES_DEFERRED_SEEN = nil, nil
  local claims, new_starts = {}, {}
  if budget > 0 and #PUSHED > 0 then
    local holds = k_holds(worker)
    local lists = {}
    for _, list in ipairs(PUSHED) do
      local other = redis.call('HGET', holds, list)
      if other then
        table.insert(lists, list)
        new_starts[list] = other
      end
    end
    if #lists > 0 then take_ordered(lists, worker, budget, claims, true) end
    for _, list in ipairs(lists) do rewake(list, new_starts[list]) end  -- a token only while work is left
  end
  for _, queue in ipairs(deferred) do
    if not new_starts[queue] then wake(queue) end
  end
  return claims
end

-- ==== the signal bus ==========================================================================================

-- Leave a message for the signal bus, and one wake-up token for a bus blocked waiting. Only the bus's
-- script pops messages, one batch at a time and in order, so events to one workflow stay in order
-- whatever the number of buses (a bus never holds a message outside Redis while blocked).
local function wake_bus()
  if redis.call('LLEN', K_BUS_WAKE) == 0 then redis.call('LPUSH', K_BUS_WAKE, '1') end
end

local function push_bus(message)
  redis.call('LPUSH', K_BUS, cjson.encode(message))
  wake_bus()
end

-- The retry timer of a bus message set aside (see "work set aside"): unique (the same event sent twice is two
-- messages) and in the order they were set aside (equal due times fire in the members' byte order). The
-- message is marked `again`: its first try may have got as far as recording a delivery (`bus_apply.lua`).
local function bus_retry(raw)
  local decoded, m = pcall(cjson.decode, raw)
  if decoded and type(m) == 'table' then
    m.again = true
    raw = cjson.encode(m)
  end
  return 'b|' .. string.format('%020d', redis.call('INCR', K_SEQ)) .. '|' .. raw
end

-- A bus message set aside goes back on the bus, behind what waits there (messages sent since went first).
local function bus_again(member)
  local rest = string.sub(member, 3)
  redis.call('LPUSH', K_BUS, string.sub(rest, string.find(rest, '|', 1, true) + 1))
  wake_bus()
end

-- Operations on another shard's workflow (a child in another slot, a parent elsewhere, a limited task's home)
-- cannot run in this script (one script, one slot): `route` applies them here when the target is this shard,
-- else leaves them on this shard's bus list, and the signal bus carries them over (`x_apply.lua`). Every effect
-- of a task on its workflow goes through it, so it works the same whichever shard the task lives in.


-- ==== workflow status =========================================================================================

-- Tell subscribers (result waiters, `bdurable watch`) the workflow's status; a hint, the hash is the truth.
-- A finish carries the output and error texts too (when small), so a result waiter needs no extra read.
local MAX_PUBLISHED_OUTCOME = 65536
local function publish_state(id, status, step, waiting_on, output, error_json)
  local message = {status = status, step = tonumber(step), waiting_on = waiting_on}
  if FINISHED[status] and #(output or '') + #(error_json or '') <= MAX_PUBLISHED_OUTCOME then
    message.output, message.error = output or '', error_json or ''
  end
  redis.call('PUBLISH', ch_workflow(id), cjson.encode(message))
end

-- Change status, keeping the index of (status, version) in step, and tell subscribers. `fields` (optional:
-- field, value, ...) are written in the same HSET: one read and one write of the hash per change.
local function set_status(id, status, waiting_on, now, fields)
  local wf = k_wf(id)
  local f = redis.call('HMGET', wf, 'status', 'created_at', 'name', 'version', 'step', 'output', 'error')
  if f[1] ~= status then
    if f[1] then redis.call('ZREM', k_index(f[1], f[4], f[3]), id) end
    redis.call('ZADD', k_index(status, f[4], f[3]), f[2], id)
  end
  waiting_on = waiting_on or ''
  local written = {'status', status, 'waiting_on', waiting_on, 'updated_at', int(now)}
  local output, error_json = f[6], f[7]
  for i = 1, #(fields or {}), 2 do
    local field, value = fields[i], fields[i + 1]
    written[#written + 1] = field
    written[#written + 1] = value
    if field == 'output' then output = value elseif field == 'error' then error_json = value end
  end
  redis.call('HSET', wf, unpack(written))
  publish_state(id, status, f[5], waiting_on, output, error_json)
end

-- ==== versions ================================================================================================

-- Who can run name@version: 'yes' if a live dispatcher holds it, 'other' if only other versions of the
-- name are live, 'none' if no dispatcher of that workflow is alive at all (the step then simply waits).
local function version_liveness(name, version, now)
  local live = redis.call('ZRANGEBYSCORE', k_live(name), '(' .. int(now), '+inf')
  if #live == 0 then return 'none' end
  local want = live_member(version, '')
  for _, member in ipairs(live) do
    if string.sub(member, 1, #want) == want then return 'yes' end
  end
  return 'other'
end

-- What a queued step waits for, in words: a dispatcher of its version (the one that runs it, maybe a dispatcher
-- of the old version during a deploy), or a live one at all.
local function waiting_for_dispatcher(name, version, liveness)
  if liveness == 'none' then return 'a live dispatcher that runs ' .. name .. '@' .. version end
  return 'a dispatcher of ' .. name .. '@' .. version .. ' to run its next step'
end

-- Every halt is counted here (`bdurable_workflows_halted_total` is exported from this total).
local function halt_version_mismatch(id, name, version, now)
  redis.call('HINCRBY', K_STATS, 'halted', 1)
  set_status(id, 'VERSION_MISMATCH', 'no live dispatcher runs ' .. name .. '@' .. version ..
    ' while others run other versions; deploy it, then run `bdurable resume ' .. id .. '`', now)
end

-- ==== steps and tasks =========================================================================================

-- Put the workflow's next step on its version's ready queue (or halt it when its version is gone).
-- `force` re-queues even when a step is already marked pending (used by recovery and resume). A workflow
-- that never committed a step and has no parent is a new start, which keeps its place in line (`order`).
local function enqueue_step(id, now, force)
  local wf = k_wf(id)
  local f = redis.call('HMGET', wf, 'status', 'pending', 'name', 'version', 'queue', 'priority', 'cache_owner',
    'parent_id', 'order')
  if not f[1] or FINISHED[f[1]] then return 0 end
  if f[2] == '1' and not force then return 0 end
  redis.call('HSET', wf, 'pending', '1', 'queued_at', int(now))
  local name, version, queue = f[3], f[4], f[5]
  local liveness = version_liveness(name, version, now)
  if liveness == 'other' then
    halt_version_mismatch(id, name, version, now)
    return 0
  end
  local continuations = k_step_queue(queue, version, name)
  local list, order = continuations, nil
  if not f[7] and not f[8] and f[9] then  -- a new start, never run
    list, order = k_step_new(queue, version, name), tonumber(f[9])
  end
  redis.call('SADD', K_STEP_QUEUES, step_queue_member(queue, name, version))
  push_ready(list, continuations, item_step(id), tonumber(f[6] or '0'), order or next_order())
  set_status(id, 'RUNNING', waiting_for_dispatcher(name, version, liveness), now)
  return 1
end

-- Put task call `seq` of workflow `id` on its queue's ready set, at `order` (its place in line).
local function queue_task(id, seq, queue, name, priority, order, limited)
  redis.call('SADD', K_TASK_QUEUES, task_queue_member(queue, name))
  local list = k_task_queue(queue, name)
  local item = limited and item_limited(seq, id) or item_task(seq, id)
  push_ready(list, list, item, tonumber(priority or '0'), order)
end

-- Put a recorded task call on its queue's ready set. `keep_place` (a hand-back) keeps the order it had.
local function push_task(id, seq, now, keep_place)
  local task = k_task(seq, id)
  local t = redis.call('HMGET', task, 'queue', 'name', 'priority', 'order', 'limit')
  local order = keep_place and tonumber(t[4]) or nil
  if not order then
    order = next_order()
    redis.call('HSET', task, 'order', int(order), 'queued_at', int(now))
  end
  queue_task(id, seq, t[1], t[2], t[3], order, t[5])
end

-- A limit has room again (a permit freed, the window moved): the calls it held back longest go back to their
-- ready queue, in their place, as many as there is room for; the rest wait for the next permit or the timer.
wake_held = function(limit, now)
  local held = k_held(limit)
  if redis.call('ZCARD', held) == 0 then return end
  local room, reason, free_at = limit_room(limit, now)
  if room > 0 then
    local queue = redis.call('HGET', k_limit(limit), 'queue')
    local moved = redis.call('ZPOPMIN', held, room)
    for i = 1, #moved, 2 do redis.call('ZADD', queue, moved[i + 1], moved[i]) end
    if #moved > 0 then wake(queue) end
  elseif reason == 'rate' then
    add_timer('l|' .. limit, free_at)
  end
end

-- Put a work item back on its ready queue, in its place, with a new lease (a lease taken for it before is void).
local function requeue(item, now)
  local hash = item_hash(item)
  if redis.call('EXISTS', hash) == 0 then return end  -- finished, cancelled or expired meanwhile
  redis.call('HSET', hash, 'lease', redis.call('INCR', K_SEQ))
  local kind, id, seq = parse_item(item)
  if kind == 'w' then enqueue_step(id, now, true) else push_task(id, seq, now, true) end
end

-- Put an item a dispatcher holds back on its ready queue, with a new lease so that a late commit from that
-- dispatcher is rejected (a drain that timed out, or a claim whose reply never reached the dispatcher).
-- A handed-back attempt never ended: it does not count as one.
local function hand_back(worker, item, now)
  redis.call('HDEL', k_proc(worker), item)
  release_permit(item, now)
  requeue(item, now)
end

-- Record the result of durable call `seq` (an inbox entry) unless it was already resolved: the check makes
-- every delivery idempotent, so a timer racing a result never delivers twice. Returns 1 when recorded.
-- `attempts`: how many attempts a task call took (kept with the history); `checked`: the caller has just
-- checked that the workflow runs and the call is pending (`step_follows`).
local function record_delivery(id, seq, entry, final_status, now, attempts, checked)
  local wf = k_wf(id)
  local calls = k_calls(id)
  if not checked then
    local status = redis.call('HGET', wf, 'status')
    if not status or FINISHED[status] then return 0 end
    if redis.call('HGET', calls, seq .. ':s') ~= 'pending' then return 0 end
  end
  -- the inbox first: the hashes were read (here or by the caller), so a key of the wrong type fails here, before
  -- any change (a delivery retried after such a failure finds the call still pending)
  redis.call('RPUSH', k_inbox(id), entry)
  if attempts then
    redis.call('HSET', calls, seq .. ':s', final_status, seq .. ':f', int(now), seq .. ':n', int(attempts))
  else
    redis.call('HSET', calls, seq .. ':s', final_status, seq .. ':f', int(now))
  end
  redis.call('HINCRBY', wf, 'step', 1)
  return 1
end

-- Deliver it: record it, and queue the workflow's next step to consume it.
local function deliver(id, seq, entry, final_status, now, attempts)
  if record_delivery(id, seq, entry, final_status, now, attempts) == 0 then return 0 end
  enqueue_step(id, now, false)
  return 1
end

-- Add a timer; wake the scheduler only when it becomes the earliest (it sleeps until the earliest).
add_timer = function(member, due)
  local first = redis.call('ZRANGE', K_TIMERS, 0, 0, 'WITHSCORES')
  redis.call('ZADD', K_TIMERS, int(due), member)
  if #first == 0 or tonumber(first[2]) > due then
    redis.call('PUBLISH', CH_TIMERS, int(due))
  end
end

-- What one script call learned once and reuses for every workflow it creates (a batch of starts): per workflow
-- version and queue, its keys, its liveness, and whether it was registered (kinds, step queues) in this call.
local CREATED = {}

local function created_kind(name, version, queue)
  local id = queue .. '\t' .. name .. '\t' .. version
  local c = CREATED[id]
  if c then return c end
  redis.call('SADD', K_KINDS, kind_member(name, version))
  c = {running = k_index('RUNNING', version, name), continuations = k_step_queue(queue, version, name),
    new_starts = k_step_new(queue, version, name), member = step_queue_member(queue, name, version)}
  CREATED[id] = c
  return c
end

local function add_field(fields, field, value)
  fields[#fields + 1] = field
  fields[#fields + 1] = value
end

-- Create a workflow record and queue its first step. Returns true, or false with the name and status of the
-- workflow that already has this id.
-- With `start_at` (ms), it waits as SCHEDULED until then (a timer), instead of queuing its first step now.
-- `trace`: the W3C traceparent its steps continue (tracing on; nil or '' otherwise, and nothing is stored).
local function create_workflow(id, name, version, queue, input, parent_id, parent_seq, parent_shard, priority, now,
                               start_at, trace)
  local wf = k_wf(id)
  local existing = redis.call('HMGET', wf, 'name', 'status')
  if existing[1] then return false, existing[1], existing[2] end
  local c = created_kind(name, version, queue)
  -- Only what is known now: absent fields read as their defaults (no parent, nothing parked, no lease yet,
  -- priority 0), which keeps a waiting workflow's footprint small. Written at once, in one HSET: a new workflow
  -- has no reader yet (nobody can follow an id before it exists), so nothing is published.
  local at = int(now)
  local fields = {'name', name, 'version', version, 'queue', queue, 'input', input, 'step', '0',
    'created_at', at, 'updated_at', at}
  if priority and priority ~= 0 then add_field(fields, 'priority', int(priority)) end
  if trace and trace ~= '' then add_field(fields, 'trace', trace) end
  local order
  if parent_id ~= '' then
    add_field(fields, 'parent_id', parent_id)
    add_field(fields, 'parent_seq', parent_seq)
    add_field(fields, 'parent_shard', parent_shard)
  else
    order = next_order()  -- its place in line among new starts
    add_field(fields, 'order', order)
  end
  zadd(K_IDS, 0, id)
  if start_at then
    add_field(fields, 'status', 'SCHEDULED')
    add_field(fields, 'waiting_on', 'its start at ' .. utc_text(start_at))
    add_field(fields, 'start_at', int(start_at))
    redis.call('HSET', wf, unpack(fields))
    zadd(k_index('SCHEDULED', version, name), at, id)
    add_timer('d|' .. id, start_at)  -- not deferred: it reads the earliest timer
    return true
  end
  if not c.liveness then c.liveness = version_liveness(name, version, now) end
  add_field(fields, 'status', 'RUNNING')
  if c.liveness == 'other' then  -- its version is not live while others are: enqueue_step halts it
    redis.call('HSET', wf, unpack(fields))
    redis.call('ZADD', c.running, at, id)  -- not deferred: the halt moves it to another index at once
    enqueue_step(id, now, false)
    return true
  end
  -- Queued at once, as enqueue_step would (without reading back what was just written).
  add_field(fields, 'waiting_on', waiting_for_dispatcher(name, version, c.liveness))
  add_field(fields, 'pending', '1')
  add_field(fields, 'queued_at', at)
  redis.call('HSET', wf, unpack(fields))
  zadd(c.running, at, id)
  if not c.queued then
    redis.call('SADD', K_STEP_QUEUES, c.member)
    c.queued = true
  end
  local list = order and c.new_starts or c.continuations  -- a child's first step continues
  push_ready(list, c.continuations, item_step(id), tonumber(priority or 0), order or next_order())
  return true
end

-- Continue as new: this run ends and the workflow starts again under the same id, with `input` and a fresh
-- history (its calls and inbox are deleted, its signal log trimmed: memory stays bounded however long it loops). Its calls
-- still pending were released by the commit (tasks stopped, timers removed, waits dropped, children
-- cancelled). The new run's calls are numbered after the old ones (`seq_base`), so a late result addressed to
-- an old call (a child's, a task's from another shard) never lands on a new one, and a child of the new run
-- never gets an old child's id. Carried over: events buffered for later waits, and events delivered to waits
-- the old run had not yet consumed (they go back to the buffer, in order); a cancellation (the new run sees it
-- at its first await). The run counter goes up; the slot of a concurrency limit stays with the workflow.
local function continue_as_new(id, input, next_seq, based_on, now)
  local wf, calls, inbox, events = k_wf(id), k_calls(id), k_inbox(id), k_events(id)
  for _, raw in ipairs(redis.call('LRANGE', inbox, based_on, -1)) do
    local entry = cjson.decode(raw)
    local record = entry.seq and entry.ok and redis.call('HGET', calls, entry.seq)
    if record then
      local call = cjson.decode(record)
      if call.k == 'event' and (call.key == nil or call.key == cjson.null) then
        local head = '{"seq":' .. entry.seq .. ',"ok":true,"v":'
        redis.call('RPUSH', events, event_entry(call.n, string.sub(raw, #head + 1, -2)))
      end
    end
  end
  local state = redis.call('HMGET', wf, 'cancel_requested', 'cancel_reason')
  -- The signal log keeps the ending run's signals (a reader may not have read those emitted by its last step
  -- yet) and drops the run's before: two runs at most. `signals_offset` counts what was dropped.
  local log, dropping = k_signals(id), tonumber(redis.call('HGET', wf, 'signals_prev') or '0')
  if dropping > 0 then
    redis.call('LTRIM', log, dropping, -1)
    redis.call('HINCRBY', wf, 'signals_offset', dropping)
  end
  redis.call('HSET', wf, 'signals_prev', redis.call('LLEN', log))
  redis.call('DEL', calls, inbox)
  for _, field in ipairs(redis.call('HKEYS', wf)) do
    if string.sub(field, 1, 7) == 'parked:' or string.sub(field, 1, 2) == 'w:' then redis.call('HDEL', wf, field) end
  end
  redis.call('HDEL', wf, 'cache_owner', 'cache_len', 'parked', 'parked_on', 'step_crashes', 'suspect', 'order')
  redis.call('HSET', wf, 'input', input, 'step', '0', 'seq_base', int(next_seq))
  local run = tonumber(redis.call('HGET', wf, 'run') or '1') + 1  -- a first run has no field
  redis.call('HSET', wf, 'run', run)
  if state[1] == '1' then redis.call('RPUSH', inbox, inbox_cancel(state[2] or '')) end
  enqueue_step(id, now, true)  -- a continuation (no `order`): it ran before
end

-- Finish a workflow: final status, output or error, expiry of all its keys after the retention period,
-- delivery of its result to its parent, and the slot of its concurrency limit freed.
-- `fields`: more to write with the final status (field, value, ...).
local function finish_workflow(id, status, output, error_json, retention_ms, now, fields)
  local wf = k_wf(id)
  local written = {'output', output, 'pending', '0', 'finished_at', int(now)}
  if error_json ~= '' then add_field(written, 'error', error_json) end
  for i = 1, #(fields or {}), 2 do add_field(written, fields[i], fields[i + 1]) end
  set_status(id, status, '', now, written)
  local expire_at = now + retention_ms
  for _, key in ipairs({wf, k_calls(id), k_inbox(id), k_signals(id), k_events(id)}) do
    redis.call('PEXPIREAT', key, int(expire_at))
  end
  redis.call('ZADD', K_INDEX_EXPIRE, int(expire_at), id)
  local parent = redis.call('HMGET', wf, 'parent_id', 'parent_seq', 'parent_shard', 'slot', 'slot_shard')
  if parent[4] then
    route({shard = parent[5], op = 'release_slot', limit = parent[4], member = shard_number() .. '|' .. id}, now)
  end
  if parent[1] and parent[1] ~= '' then
    local entry
    if status == 'COMPLETED' then
      entry = inbox_ok(parent[2], output)
    else
      entry = inbox_error(parent[2], wrap_error('ChildWorkflowError', error_json, {workflow_id = id}))
    end
    route({shard = parent[3] or shard_number(), op = 'deliver', id = parent[1], seq = parent[2], entry = entry,
      status = status == 'COMPLETED' and 'done' or 'failed'}, now)
  end
end

-- A task has failed for good: write its dead-letter entry, then either fail the workflow's call with
-- TaskFailedError or park the workflow on the entry until an operator retries or fails it.
-- Deliver a task call's outcome to its workflow, which lives in another shard when the task is limited (a
-- limited task lives with its limit), with how many attempts it took (kept with the history: `<seq>:n`).
local function deliver_task_outcome(id, seq, wf_shard, entry, status, now, attempts)
  route({shard = wf_shard or shard_number(), op = 'deliver', id = id, seq = seq, entry = entry, status = status,
    attempts = attempts}, now)
end

-- A task has failed for good: write its dead-letter entry, then either fail the workflow's call with
-- TaskFailedError or park the workflow on the entry until an operator retries or fails it.
local function exhaust_task(id, seq, error_json, now)
  local task = k_task(seq, id)
  local t = redis.call('HMGET', task, 'name', 'args', 'attempts', 'on_exhausted', 'wf_shard')
  local entry_id = shard_number() .. '-' .. redis.call('INCR', K_SEQ)
  local parked = t[4] == 'park'
  redis.call('HSET', k_dlq_entry(entry_id), 'workflow_id', id, 'seq', seq, 'task', t[1], 'args', t[2],
    'error', error_json, 'attempts', t[3], 'parked', parked and '1' or '0', 'created_at', int(now))
  redis.call('ZADD', K_DLQ, int(now), entry_id)
  if parked then
    local text = 'dead-letter entry ' .. entry_id .. ' (task ' .. t[1] .. ' failed after ' .. t[3] ..
      (t[3] == '1' and ' attempt' or ' attempts') .. '); run `bdurable dlq retry ' .. entry_id ..
      '` or `bdurable dlq fail ' .. entry_id .. '`'
    redis.call('HSET', task, 'lease', '0', 'dlq_entry', entry_id)
    route({shard = t[5] or shard_number(), op = 'park', id = id, seq = seq, text = text}, now)
    return entry_id
  end
  local failure = wrap_error('TaskFailedError', error_json, {task_name = t[1], attempts = tonumber(t[3])})
  redis.call('DEL', task)
  deliver_task_outcome(id, seq, t[5], inbox_error(seq, failure), 'failed', now, tonumber(t[3]))
  return entry_id
end

-- An attempt of a task call ended in failure (it raised, timed out, or died with its dispatcher): count it,
-- keep its error, then retry after `delay_ms`, or, when that is nil, give up (dead letter). The delay is
-- decided by the caller's retry policy (bdurable/retry.py), the one place that decides retries.
-- Returns the dead-letter entry id when the call was given up.
local function task_attempt_failed(id, seq, error_json, delay_ms, now)
  local task = k_task(seq, id)
  redis.call('HINCRBY', task, 'attempts', 1)
  redis.call('HSET', task, 'last_error', error_json, 'lease', '0')
  if delay_ms then
    add_timer(timer_call('r', seq, id), now + delay_ms)
    return nil
  end
  return exhaust_task(id, seq, error_json, now)
end

-- ==== events ==================================================================================================

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

-- Keyed waits: the set k_keyed(name, key) holds one call ref per wait. Beside it, k_keyed_count(name, key)
-- counts each workflow's waits (field: its id) and all of them (field ''), so that a publish counts the distinct
-- workflows it wakes in O(1) instead of reading 10,000 refs in one command. Waits added by a version without the
-- counts make the total disagree with the set: the count then reads the set, until it drains and both reset.
local function keyed_added(name, key, id)
  local counts = k_keyed_count(name, key)
  redis.call('HINCRBY', counts, id, 1)
  redis.call('HINCRBY', counts, '', 1)
end

-- Waits of the workflows `ids` (one entry per wait) just left the set: count them out, or drop the counts once
-- the set is empty. Returns how many waits are left.
local function keyed_removed(name, key, ids)
  local counts = k_keyed_count(name, key)
  local left = redis.call('SCARD', k_keyed(name, key))
  if left == 0 then
    redis.call('DEL', counts)
    return 0
  end
  for _, id in ipairs(ids) do
    if redis.call('HINCRBY', counts, id, -1) <= 0 then redis.call('HDEL', counts, id) end
  end
  redis.call('HINCRBY', counts, '', -#ids)
  return left
end

-- How many distinct workflows wait on a keyed event.
local function keyed_waiting(name, key)
  local waits = redis.call('SCARD', k_keyed(name, key))
  if waits == 0 then return 0 end
  local counts = k_keyed_count(name, key)
  if tonumber(redis.call('HGET', counts, '') or '0') == waits then return redis.call('HLEN', counts) - 1 end
  local workflows, waiting = {}, 0  -- counts incomplete (waits of an older version): read the set
  for _, member in ipairs(redis.call('SMEMBERS', k_keyed(name, key))) do
    local id = parse_call_ref(member)
    if not workflows[id] then
      workflows[id] = true
      waiting = waiting + 1
    end
  end
  return waiting
end

-- Register a wait for an event; a matching event already buffered is delivered at once.
local function register_wait(id, seq, name, key, timeout_ms, now)
  if key then
    if redis.call('SADD', k_keyed(name, key), call_ref(seq, id)) == 1 then keyed_added(name, key, id) end
  else
    local buffer = k_events(id)
    local head = event_entry(name, '')
    for _, entry in ipairs(redis.call('LRANGE', buffer, 0, -1)) do
      if string.sub(entry, 1, #head) == head then
        redis.call('LREM', buffer, 1, entry)
        deliver(id, seq, inbox_ok(seq, string.sub(entry, #head + 1)), 'done', now)
        return
      end
    end
    local wf = k_wf(id)
    local field = 'w:' .. name
    local waiting = redis.call('HGET', wf, field)
    redis.call('HSET', wf, field, waiting and (waiting .. ' ' .. seq) or seq)
  end
  if timeout_ms and timeout_ms > 0 then add_timer(timer_call('e', seq, id), now + timeout_ms) end
end

-- Forget the registration of an event wait (after a timeout, or when the call is released).
local function unregister_wait(id, seq, record)
  if record.key and record.key ~= cjson.null then
    if redis.call('SREM', k_keyed(record.n, record.key), call_ref(seq, id)) == 1 then
      keyed_removed(record.n, record.key, {id})
    end
  else
    drop_waiter(id, record.n, seq)
  end
  redis.call('ZREM', K_TIMERS, timer_call('e', seq, id))
end

-- ==== cancellation and release ================================================================================

local request_cancel

-- A pending call the workflow no longer waits for (it was cancelled, or the workflow ended): stop the
-- work behind it. Idempotent: only a call still 'pending' is released.
local function release_call(id, seq, why, now)
  local calls = k_calls(id)
  if redis.call('HGET', calls, seq .. ':s') ~= 'pending' then return end
  redis.call('HSET', calls, seq .. ':s', why, seq .. ':f', int(now))
  local record = cjson.decode(redis.call('HGET', calls, seq))
  if record.k == 'task' then
    local wf = k_wf(id)
    if redis.call('HDEL', wf, 'parked:' .. seq) == 1 then redis.call('HINCRBY', wf, 'parked', -1) end
    route({shard = record.home or shard_number(), op = 'release_task', id = id, seq = seq}, now)
  elseif record.k == 'sleep' then
    redis.call('ZREM', K_TIMERS, timer_call('s', seq, id))
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
  if s[1] == 'QUEUED' or s[1] == 'SCHEDULED' then  -- it never started: its code has nothing to clean up
    redis.call('ZREM', K_TIMERS, 'd|' .. id)
    local cancelled = error_record('WorkflowCancelledError', reason ~= '' and ('workflow cancelled: ' .. reason)
      or 'workflow cancelled', {reason = reason ~= '' and reason or cjson.null})
    finish_workflow(id, 'CANCELLED', 'null', cancelled, RETENTION_MS, now)
    return 1
  end
  local inbox = k_inbox(id)
  if s[1] == 'VERSION_MISMATCH' then
    -- Halted: no step runs, so its code has seen none of the entries after its last commit (`cache_len`). The
    -- cancel goes before them: asked while the run could not look, it is the first thing the run sees once
    -- resumed. After them, a run that finishes on one of those results (its timer fired meanwhile) would end
    -- COMPLETED with its cancellation never seen; the results it abandons are dropped as a cancel's late ones.
    local consumed = tonumber(redis.call('HGET', wf, 'cache_len') or '0')
    local unseen = redis.call('LRANGE', inbox, consumed, -1)
    if #unseen > 0 then
      if consumed > 0 then redis.call('LTRIM', inbox, 0, consumed - 1) else redis.call('DEL', inbox) end
      redis.call('RPUSH', inbox, inbox_cancel(reason))
      for first = 1, #unseen, ZADD_CHUNK do
        redis.call('RPUSH', inbox, unpack(unseen, first, math.min(first + ZADD_CHUNK - 1, #unseen)))
      end
      enqueue_step(id, now, false)  -- halted again while its version is missing
      return 1
    end
  end
  redis.call('RPUSH', inbox, inbox_cancel(reason))
  enqueue_step(id, now, false)
  return 1
end

-- Halt queued steps of versions no live dispatcher runs while other versions of the workflow are live.
local function sweep_versions(now)
  local halted = 0
  for _, member in ipairs(redis.call('SMEMBERS', K_STEP_QUEUES)) do
    local queue, name, version = parse_step_queue_member(member)
    local continuations, new_starts = k_step_queue(queue, version, name), k_step_new(queue, version, name)
    if redis.call('ZCARD', continuations) + redis.call('ZCARD', new_starts) == 0 then
      redis.call('SREM', K_STEP_QUEUES, member)
    elseif version_liveness(name, version, now) == 'other' then
      for _, list in ipairs({continuations, new_starts}) do
        for _, item in ipairs(redis.call('ZRANGE', list, 0, -1)) do
          local _, id = parse_item(item)
          if redis.call('EXISTS', k_wf(id)) == 1 then
            halt_version_mismatch(id, name, version, now)
            halted = halted + 1
          end
        end
      end
      redis.call('DEL', continuations, new_starts, k_wake(continuations))
      WOKEN[k_wake(continuations)] = nil
      redis.call('SREM', K_STEP_QUEUES, member)
    end
  end
  return halted
end

-- ==== across shards ===========================================================================================

-- Apply a cross-shard operation on this shard (idempotent: the bus may carry one twice after a crash).
-- A workflow (maybe of another shard) may take a slot of its concurrency limit: the longest-waiting first.
local function grant_slots(limit, now)
  local room = tonumber(redis.call('HGET', k_limit(limit), 'concurrency') or '0') - redis.call('SCARD', k_slots(limit))
  if room <= 0 then return end
  for i, member in ipairs(redis.call('ZPOPMIN', k_slot_queue(limit), room)) do
    if i % 2 == 1 then
      redis.call('SADD', k_slots(limit), member)
      local sep = string.find(member, '|', 1, true)
      route({shard = string.sub(member, 1, sep - 1), op = 'grant', id = string.sub(member, sep + 1)}, now)
    end
  end
end

local function apply_x(m, now)
  if m.op == 'deliver' then
    local attempts = m.attempts
    if attempts == cjson.null then attempts = nil end
    deliver(m.id, m.seq, m.entry, m.status, now, attempts)
  elseif m.op == 'create_task' then  -- a limited task, created in its limit's shard
    local task = k_task(m.seq, m.id)
    if redis.call('EXISTS', task) == 0 then
      local limit, settings = m.limit.id, k_limit(m.limit.id)
      redis.call('HDEL', settings, 'concurrency', 'rate_n', 'rate_ms')  -- the newest call's settings hold
      for _, field in ipairs({'concurrency', 'rate_n', 'rate_ms'}) do
        local value = m.limit[field]
        if value and value ~= cjson.null then redis.call('HSET', settings, field, int(value)) end
      end
      local queue, name = m.fields[6], m.fields[2]
      redis.call('HSET', settings, 'queue', k_task_queue(queue, name), 'key', m.limit.text or '')
      redis.call('SADD', K_LIMITS, limit)
      redis.call('HSET', task, unpack(m.fields))
      push_task(m.id, m.seq, now, false)
    end
  elseif m.op == 'release_task' then  -- its workflow no longer waits for it: stop the work behind it
    local task = k_task(m.seq, m.id)
    local entry = redis.call('HGET', task, 'dlq_entry')
    if entry then redis.call('HSET', k_dlq_entry(entry), 'parked', '0') end
    redis.call('DEL', task)
    redis.call('ZREM', K_TIMERS, timer_call('r', m.seq, m.id))
    redis.call('PUBLISH', CH_CANCEL, call_ref(m.seq, m.id))  -- a dispatcher running it stops it
  elseif m.op == 'park' then  -- a task of this workflow waits on a dead-letter entry
    local wf = k_wf(m.id)
    if redis.call('HSETNX', wf, 'parked:' .. m.seq, '1') == 1 then redis.call('HINCRBY', wf, 'parked', 1) end
    redis.call('HSET', wf, 'parked_on', m.text)
    set_status(m.id, 'PARKED', m.text, now)
  elseif m.op == 'unpark' then  -- an operator resolved the entry (retried: the workflow waits for the task again)
    local wf = k_wf(m.id)
    if redis.call('HDEL', wf, 'parked:' .. m.seq) == 1 then
      if redis.call('HINCRBY', wf, 'parked', -1) <= 0 and m.retried then
        set_status(m.id, 'RUNNING', 'task ' .. m.task .. ' (retried)', now)
      end
    end
  elseif m.op == 'note' then  -- what a call waits for (a limit holds it back)
    local status = redis.call('HGET', k_wf(m.id), 'status')
    if status == 'RUNNING' and redis.call('HGET', k_calls(m.id), m.seq .. ':s') == 'pending' then
      set_status(m.id, 'RUNNING', m.text, now)
    end
  elseif m.op == 'release_slot' then  -- a workflow holding (or waiting for) a slot ended
    redis.call('SREM', k_slots(m.limit), m.member)
    redis.call('ZREM', k_slot_queue(m.limit), m.member)
    grant_slots(m.limit, now)
  elseif m.op == 'slot_taken' then  -- a run took a slot, or its place in line (admit.lua): its finish frees it
    local status = redis.call('HGET', k_wf(m.id), 'status')
    if status and not FINISHED[status] then
      redis.call('HSET', k_wf(m.id), 'slot', m.limit, 'slot_shard', m.limit_shard)
    else  -- it ended (or expired) before this came: give the slot back now
      route({shard = m.limit_shard, op = 'release_slot', limit = m.limit, member = shard_number() .. '|' .. m.id}, now)
    end
  elseif m.op == 'grant' then  -- a QUEUED workflow got its slot: its first step runs
    local wf = k_wf(m.id)
    local status = redis.call('HGET', wf, 'status')
    if status == 'QUEUED' then
      enqueue_step(m.id, now, true)
    elseif status and not FINISHED[status] then
      -- Not QUEUED yet: its dispatcher was told 'queued' (admit.lua) and is committing that; the slot freed in
      -- between. The grant waits here for that commit, which runs the step at once (apply_step).
      redis.call('HSET', wf, 'slot_granted', '1')
    end  -- a run that ended meanwhile gave its slot back (slot_taken, finish_workflow)
  elseif m.op == 'cancel' then
    request_cancel(m.id, m.reason, now)
  elseif m.op == 'start_child' then
    local created = create_workflow(m.id, m.name, m.version, m.queue, m.input, m.parent_id, m.parent_seq,
      m.parent_shard, m.priority, now, nil, m.trace)
    if not created then
      local f = redis.call('HMGET', k_wf(m.id), 'parent_id', 'parent_seq')
      if f[1] ~= m.parent_id or f[2] ~= m.parent_seq then  -- not a replay of our own start: a conflict
        local conflict = error_record('ChildWorkflowError', 'workflow id ' .. m.id .. ' is already used',
          {workflow_id = m.id, error_type = 'WorkflowAlreadyExistsError'})
        route({shard = m.parent_shard, op = 'deliver', id = m.parent_id, seq = m.parent_seq, status = 'failed',
          entry = inbox_error(m.parent_seq, conflict)}, now)
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
    push_bus(m)
  end
end

-- ==== committing a step =======================================================================================

-- Apply a step's document (built by bdurable/wire.py StepDocument): record its new durable calls, schedule
-- what they need (tasks on ready queues, timers, child workflows, signals), set the status, and finish the
-- workflow when it returned. `payload(index)` gives the document's payloads (a call's `p` is its index).
-- based_on is how many inbox entries the step consumed; if more arrived meanwhile the next step is queued.
-- The caller checked that the step may commit (its lease, or `step_follows`). Returns 'ok' or 'finished'.
local function apply_step(worker, id, based_on, step, payload, now)
  local wf = k_wf(id)
  local calls = k_calls(id)
  local signals = 0
  local priority, priority_read = nil, false
  local function run_priority()  -- read once, and only by a step that starts something (a run's own priority)
    if not priority_read then priority, priority_read = redis.call('HGET', wf, 'priority'), true end
    return priority
  end

  -- A workflow with a concurrency limit took a slot (or queues for one) before its first step ran.
  local admission = step.admission
  if admission and admission ~= cjson.null then
    redis.call('HSET', wf, 'slot', admission.limit, 'slot_shard', admission.shard)
    local granted = redis.call('HDEL', wf, 'slot_granted') == 1  -- a grant that came before this commit
    if admission.queued then  -- no slot yet: it waits, QUEUED, until one frees (its code has not run)
      set_status(id, 'QUEUED', admission.text, now, {'pending', '0'})
      if granted then enqueue_step(id, now, true) end  -- one freed meanwhile: the next claim is admitted
      return 'ok'
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
    elseif c.kind == 'task' or c.kind == 'child' then  -- pending, its arguments kept with the history
      redis.call('HSET', calls, seq, c.rec, seq .. ':s', 'pending', seq .. ':t', int(now), seq .. ':a', payload(c.p))
    else  -- a sleep, an event wait: pending
      redis.call('HSET', calls, seq, c.rec, seq .. ':s', 'pending', seq .. ':t', int(now))
    end
    if c.kind == 'task' then
      local fields = {'name', c.name, 'args', payload(c.p), 'queue', c.queue, 'attempts', '0',
        'max_attempts', int(c.max_attempts), 'backoff_ms', int(c.backoff_ms), 'timeout_ms', int(c.timeout_ms),
        'on_exhausted', c.on_exhausted, 'lease', '0'}
      if run_priority() then add_field(fields, 'priority', priority) end  -- a run's tasks inherit its priority
      if c.trace then add_field(fields, 'trace', c.trace) end  -- its attempts' spans continue it
      if c.of then add_field(fields, 'of', c.of) end  -- its workflow, for its attempts' log lines
      if c.limit == nil or c.limit == cjson.null then  -- created and queued at once, in one write
        local order = next_order()
        add_field(fields, 'order', int(order))
        add_field(fields, 'queued_at', int(now))
        redis.call('HSET', k_task(seq, id), unpack(fields))
        queue_task(id, seq, c.queue, c.name, priority, order, false)
      else  -- a limited task lives with its limit, in the limit's shard
        add_field(fields, 'limit', c.limit.id)
        add_field(fields, 'wf_shard', shard_number())
        route({shard = c.limit.shard, op = 'create_task', id = id, seq = seq, fields = fields, limit = c.limit}, now)
      end
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
        priority = tonumber(run_priority() or '0'), trace = c.trace}, now)
    end
  end
  if signals > 0 then redis.call('HINCRBY', wf, 'step', signals) end

  -- Calls the workflow no longer waits for (cancelled, or left pending when it ended): stop their work.
  for _, seq in ipairs(step.cancelled) do release_call(id, int(seq), 'cancelled', now) end
  for _, seq in ipairs(step.abandon) do release_call(id, int(seq), 'abandoned', now) end

  redis.call('HDEL', wf, 'step_crashes', 'suspect')  -- it ran to the end: not what killed its dispatchers
  local outcome = step.outcome
  if outcome ~= cjson.null and outcome.status == 'CONTINUED' then
    continue_as_new(id, payload(outcome.p), outcome.next_seq, based_on, now)  -- no copy of the new run is kept
    return 'ok'
  end
  -- The committing dispatcher keeps its copy of the run, current up to here (written with the status).
  local written = {'cache_owner', worker, 'cache_len', int(based_on)}
  if outcome ~= cjson.null then
    finish_workflow(id, outcome.status, payload(outcome.p), outcome.error, RETENTION_MS, now, written)
    return 'finished'
  end
  if redis.call('LLEN', k_inbox(id)) > based_on then
    redis.call('HSET', wf, unpack(written))  -- before enqueue_step, which reads it (a continuation)
    enqueue_step(id, now, true)  -- results arrived while the step ran: run the next step now
    return 'ok'
  end
  add_field(written, 'pending', '0')
  if tonumber(redis.call('HGET', wf, 'parked') or '0') > 0 then
    set_status(id, 'PARKED', redis.call('HGET', wf, 'parked_on'), now, written)
  else
    set_status(id, step.status, step.waiting_on, now, written)
  end
  return 'ok'
end

-- Whether the step a dispatcher ran right after a task of the workflow (on its cached copy of the run, fed the
-- task's result: `StepRunner.follow` in services/dispatcher/steps.py) may commit with that task's result. Only
-- if the copy is exactly the committed state plus this result: no step queued or running, the copy is this
-- dispatcher's and current, nothing else arrived in the inbox, and the call still waits for its result.
-- `based_on` counts the new result. Otherwise the result is delivered as usual and the step runs again.
local function step_follows(worker, id, seq, based_on)
  local f = redis.call('HMGET', k_wf(id), 'status', 'pending', 'cache_owner', 'cache_len')
  if f[1] ~= 'RUNNING' or f[2] ~= '0' or f[3] ~= worker or tonumber(f[4]) ~= based_on - 1 then return false end
  if redis.call('LLEN', k_inbox(id)) ~= based_on - 1 then return false end
  return redis.call('HGET', k_calls(id), seq .. ':s') == 'pending'
end

-- ==== one call ================================================================================================
-- The library is loaded once and serves every call (a Redis Function library), so what a call may change is
-- reset before its script's body runs: the tags and keys (bind_keys), the clock, the caches of one call.
local function begin_call(keys, argv)
  bind_keys(keys, argv)
  NOW, RETENTION_MS = nil, 7 * 86400000
  PUSHED, PUSHED_SEEN, WOKEN = {}, {}, {}
  WAKES_DEFERRED, WAKES_DEFERRED_SEEN = nil, nil
  CREATED = {}
  ORDERS_AHEAD, ORDER_NEXT, ORDER_LAST, DEFERRED, DEFERRED_KEYS = 0, nil, nil, nil, {}
end
