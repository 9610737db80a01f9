-- The signal bus applies its messages: events to waiting workflows (or their buffers), keyed publishes
-- to every waiter of (name, key), cancellations, and signals out to pub/sub. Each message is popped and
-- applied in this one script, so a crash never applies half of one and never applies one twice.
-- Only this script pops messages, a batch at a time and in order (buses block on a wake-up token, never on
-- the list itself), so events to one workflow are applied in the order they were sent, whatever the number
-- of buses. When more messages remain, the token is passed on to another blocked bus. KEYS[1] T; ARGV: G, bus id, max messages, lease ms,
-- retention ms (a cancelled workflow that never started finishes here)
-- Cross-shard operations ('x') are moved to this bus's forward list and returned: the bus applies them on
-- their shard (`x_apply.lua`), then removes them from the list (a dead bus's list is put back for others).
-- Returns {delivered, buffered, dropped, published, cancelled, {forwarded message...}}
local bus, budget, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
RETENTION_MS = tonumber(ARGV[5])
local now = now_once()
redis.call('ZADD', K_BUS_ALIVE, int(now + lease), bus)
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', K_BUS_ALIVE, '-inf', '(' .. int(now))) do
  while redis.call('LMOVE', k_bus_forward(dead), K_BUS, 'LEFT', 'RIGHT') do end
  redis.call('ZREM', K_BUS_ALIVE, dead)
end

local counts = {delivered = 0, buffered = 0, dropped = 0, published = 0, cancelled = 0}
local forward = k_bus_forward(bus)
local forwarded = {}

local function apply_event(id, name, payload, again)
  local wf = k_wf(id)
  local status = redis.call('HGET', wf, 'status')
  if not status or FINISHED[status] then counts.dropped = counts.dropped + 1 return end
  for seq in string.gmatch(redis.call('HGET', wf, 'w:' .. name) or '', '%S+') do
    -- deliver first: it reads before it writes, so data it cannot read fails the message before any change
    -- (set aside whole, lib.lua), and the wait it was for is still there when the message is tried again
    local delivered = deliver(id, seq, inbox_ok(seq, payload), 'done', now)
    if delivered == 0 and again and redis.call('HGET', k_calls(id), seq .. ':s') == 'done' then
      enqueue_step(id, now, true)  -- its first try recorded it, then failed (its waiter kept): finish the job
      delivered = 1
    end
    drop_waiter(id, name, seq)
    if delivered == 1 then
      redis.call('ZREM', K_TIMERS, timer_call('e', seq, id))
      counts.delivered = counts.delivered + 1
      return
    end
  end
  redis.call('RPUSH', k_events(id), event_entry(name, payload))  -- kept, in order, for a later wait
  counts.buffered = counts.buffered + 1
end

-- A keyed publish wakes its waiters PUBLISH_CHUNK at a time, one chunk per script call, so that a publish to
-- thousands of waiters never holds Redis for long: a publish with waiters left goes back to the head of the
-- bus list (marked as a continuation), followed by the messages popped after it, unapplied: the order of
-- messages stays the order they were sent (a second publish to the same key never wakes the first one's).
local PUBLISH_CHUNK = 25

local function apply_publish(m)
  local index = k_keyed(m.name, m.key)
  local woken, ids = 0, {}
  for _, member in ipairs(redis.call('SPOP', index, PUBLISH_CHUNK)) do
    local id, seq = parse_call_ref(member)
    table.insert(ids, id)
    if deliver(id, seq, inbox_ok(seq, m.p), 'done', now) == 1 then
      redis.call('ZREM', K_TIMERS, timer_call('e', seq, id))
      woken = woken + 1
    end
  end
  counts.delivered = counts.delivered + woken
  if keyed_removed(m.name, m.key, ids) > 0 then return true end  -- more to wake: continued in the next call
  if woken == 0 and not m.more then counts.dropped = counts.dropped + 1 end
  return false
end

local function apply(raw)
  local m = cjson.decode(raw)
  if m.t == 'event' then
    apply_event(m.id, m.name, m.p, m.again)
  elseif m.t == 'publish' then
    if apply_publish(m) then
      m.more = true
      return cjson.encode(m)
    end
  elseif m.t == 'cancel' then
    counts.cancelled = counts.cancelled + request_cancel(m.id, m.reason, now)
  elseif m.t == 'x' then
    redis.call('RPUSH', forward, raw)
    table.insert(forwarded, raw)
  elseif m.t == 'signal' then
    redis.call('PUBLISH', ch_workflow(m.id), '{"signal":' .. m.rec .. '}')
    redis.call('PUBLISH', CH_SIGNALS, '{"workflow_id":' .. cjson.encode(m.id) .. ',"signal":' .. m.rec .. '}')
    counts.published = counts.published + 1
  end
end

local popped = budget > 0 and redis.call('RPOP', K_BUS, budget)
if popped then
  for i, raw in ipairs(popped) do
    local applied, continued = pcall(apply, raw)
    if not applied then  -- set aside, alone: the rest of the batch goes on (lib.lua, "work set aside")
      set_aside(bus_retry(raw), continued)
    elseif continued then  -- back to the head of the list (popped next), after the unapplied rest, in order
      for j = #popped, i + 1, -1 do redis.call('RPUSH', K_BUS, popped[j]) end
      redis.call('RPUSH', K_BUS, continued)
      break
    end
  end
end
if redis.call('LLEN', K_BUS) > 0 then wake_bus() end  -- more is waiting: wake another bus too
return {counts.delivered, counts.buffered, counts.dropped, counts.published, counts.cancelled, forwarded}
