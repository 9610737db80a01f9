-- Read a workflow's signals after the first `seen` of all its runs, with its state, atomically. The log holds
-- the signals of the current run and the one before (a continue-as-new drops older ones): `signals_offset`
-- counts those dropped, so a reader's position runs on across runs. A reader more than a whole run behind
-- skips what was dropped. A read only: it writes nothing.
-- KEYS[1] T; ARGV: G, id, seen, '1' for the whole hash (else the status only).
-- Returns {state (hash pairs, or {status}), the position of the first signal returned, signals}.
local id, seen, full = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local wf = k_wf(id)
local offset = tonumber(redis.call('HGET', wf, 'signals_offset') or '0')
local state = full and redis.call('HGETALL', wf) or {redis.call('HGET', wf, 'status') or ''}
local start = math.max(seen - offset, 0)
return {state, offset + start, redis.call('LRANGE', k_signals(id), start, -1)}
