-- An operator resolves a dead-letter entry its workflow is parked on: 'retry' runs the task again
-- (attempts start over), 'fail' hands the workflow TaskFailedError. The entry is removed either way.
-- KEYS[1] T (the entry's shard: the task's); ARGV: G, entry id, 'retry' | 'fail'
-- Returns {'ok'} | {'missing'} | {'not_parked', reason}
local entry_id, action = ARGV[2], ARGV[3]
local entry = k_dlq_entry(entry_id)
local e = redis.call('HMGET', entry, 'workflow_id', 'seq', 'parked', 'error')
if not e[1] then return {'missing'} end
local id, seq = e[1], e[2]
local task = k_task(seq, id)
if e[3] ~= '1' or redis.call('HGET', task, 'dlq_entry') ~= entry_id then
  return {'not_parked', 'its workflow ' .. id .. ' is not parked on it (on_exhausted="raise", or already resolved)'}
end
local now = now_once()
local t = redis.call('HMGET', task, 'name', 'attempts', 'wf_shard')
redis.call('DEL', entry)
redis.call('ZREM', K_DLQ, entry_id)
if action == 'retry' then
  redis.call('HSET', task, 'attempts', '0', 'lease', '0')  -- attempts start over
  redis.call('HDEL', task, 'dlq_entry')
  push_task(id, seq, now, false)
  route({shard = t[3] or shard_number(), op = 'unpark', id = id, seq = seq, task = t[1], retried = true}, now)
  return {'ok'}
end
local failure = wrap_error('TaskFailedError', e[4], {task_name = t[1], attempts = tonumber(t[2])})
redis.call('DEL', task)
route({shard = t[3] or shard_number(), op = 'unpark', id = id, seq = seq, task = t[1], retried = false}, now)
deliver_task_outcome(id, seq, t[3], inbox_error(seq, failure), 'failed', now, tonumber(t[2]))
return {'ok'}
