-- Remove finished workflows whose retention has passed, with their index entries. Their keys carry a
-- Redis expiry too (memory is freed even while no scheduler runs); this sweep also cleans the indexes (of every
-- version, when the hash expired first) and covers a workflow re-created under the same id.
-- KEYS[1] T; ARGV: G, max workflows. Returns how many were expired.
local now = now_once()
local ids = redis.call('ZRANGEBYSCORE', K_INDEX_EXPIRE, '-inf', int(now), 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', K_INDEX_EXPIRE, id)
  local f = redis.call('HMGET', k_wf(id), 'status', 'name', 'version')
  if not f[1] or FINISHED[f[1]] then
    redis.call('DEL', k_wf(id), k_calls(id), k_inbox(id), k_signals(id), k_events(id))
    redis.call('ZREM', K_IDS, id)
    local kinds = {{f[2], f[3]}}
    if not f[1] then  -- the hash expired before this sweep: look in the indexes of every version
      kinds = {}
      for _, member in ipairs(redis.call('SMEMBERS', K_KINDS)) do table.insert(kinds, {parse_kind_member(member)}) end
    end
    for _, kind in ipairs(kinds) do
      for status, _ in pairs(FINISHED) do redis.call('ZREM', k_index(status, kind[2], kind[1]), id) end
    end
  end
end
return #ids
