-- Accept an inbound message for the signal bus (it is stored durably before the caller returns).
-- KEYS[1] T; ARGV: G, type, ... :
--   'event', id, name, payload JSON     -> {'ok', the workflow's traceparent or ''} | 'missing' | 'finished'
--   'publish', name, key, payload JSON  -> number of distinct workflows waiting (0: dropped, nothing stored)
--   'cancel', id, reason                -> 'ok' | 'missing' | 'finished' | 'already'
local kind = ARGV[2]
if kind == 'publish' then
  local waiting = keyed_waiting(ARGV[3], ARGV[4])  -- workflows, not waits: one may wait twice on a name and key
  if waiting > 0 then
    push_bus({t = 'publish', name = ARGV[3], key = ARGV[4], p = ARGV[5]})
  end
  return waiting
end
local id = ARGV[3]
local s = redis.call('HMGET', k_wf(id), 'status', 'cancel_requested', 'trace')
if not s[1] then return 'missing' end
if FINISHED[s[1]] then return 'finished' end
if kind == 'event' then
  push_bus({t = 'event', id = id, name = ARGV[4], p = ARGV[5]})
  return {'ok', s[3] or ''}
end
if s[2] == '1' then return 'already' end
push_bus({t = 'cancel', id = id, reason = ARGV[4]})
return 'ok'
