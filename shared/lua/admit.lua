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
-- From here on the run holds a slot or a place in line, which its finish must give back, whatever ends it: even
-- a finish that comes before its first step commits (the reaper failing a step that keeps killing dispatchers).
-- So the run's hash learns it now, in its own shard ('slot_taken'), and not only from that commit.
local sep = string.find(member, '|', 1, true)
local taken = {shard = string.sub(member, 1, sep - 1), op = 'slot_taken', id = string.sub(member, sep + 1),
  limit = limit, limit_shard = shard_number()}
local now = now_once()
if redis.call('SCARD', slots) < concurrency and redis.call('ZCARD', waiting) == 0 then
  redis.call('SADD', slots, member)
  route(taken, now)
  return 'admitted'
end
redis.call('ZADD', waiting, int(ready_score(priority, next_order())), member)  -- higher priority, then first in
route(taken, now)
return 'queued'
