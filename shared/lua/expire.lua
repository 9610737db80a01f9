-- Remove finished workflows whose retention has passed, with their index entries. Their keys carry a
-- Redis expiry too; this sweep also cleans the indexes and covers a workflow re-created under the same id.
-- KEYS[1] T; ARGV: G, max workflows. Returns how many were expired.
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', K_INDEX_EXPIRE, '-inf', int(now), 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', K_INDEX_EXPIRE, id)
  local status = redis.call('HGET', k_wf(id), 'status')
  if not status or FINISHED[status] then
    redis.call('DEL', k_wf(id), k_calls(id), k_inbox(id), k_signals(id), k_events(id))
    for s, _ in pairs(FINISHED) do redis.call('ZREM', k_index_status(s), id) end
  end
end
return #ids
