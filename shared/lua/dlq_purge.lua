-- Remove every dead-letter entry no workflow is parked on (parked ones need `dlq retry` or `dlq fail`).
-- KEYS[1] T; ARGV: G. Returns how many entries were removed.
local removed = 0
for _, entry_id in ipairs(redis.call('ZRANGE', K_DLQ, 0, -1)) do
  if redis.call('HGET', k_dlq_entry(entry_id), 'parked') ~= '1' then
    redis.call('DEL', k_dlq_entry(entry_id))
    redis.call('ZREM', K_DLQ, entry_id)
    removed = removed + 1
  end
end
return removed
