-- A dispatcher is about to run the first step of a workflow whose definition limits how many of its runs may be
-- in progress at once (per key): take a slot, or queue for one. Idempotent: a workflow that holds a slot, or
-- waits for one, keeps it (a dispatcher that died and a second one that retries get the same answer).
-- Runs in the limit's shard. KEYS[1] T; ARGV: G, limit id, concurrency, key (for messages), member
-- ('<shard>|<id>' of the workflow), priority.
-- Returns 'admitted' | 'queued'.
local limit, concurrency, member, priority = ARGV[2], tonumber(ARGV[3]), ARGV[5], tonumber(ARGV[6])
redis.call('HSET', k_limit(limit), 'concurrency', int(concurrency), 'key', ARGV[4])
redis.call('SADD', K_SLOT_LIMITS, limit)
local slots, waiting = k_slots(limit), k_slot_queue(limit)
if redis.call('SISMEMBER', slots, member) == 1 then return 'admitted' end
if redis.call('ZSCORE', waiting, member) then return 'queued' end
if redis.call('SCARD', slots) < concurrency and redis.call('ZCARD', waiting) == 0 then
  redis.call('SADD', slots, member)
  return 'admitted'
end
redis.call('ZADD', waiting, int(ready_score(priority, next_order())), member)  -- higher priority, then first in
return 'queued'
