-- Re-queue a VERSION_MISMATCH workflow (after the right version is deployed).
-- KEYS[1] T; ARGV: G, id. Returns {'ok'} | {'missing'} | {'not_halted', status} | {'still_missing', name@version}
local id = ARGV[2]
local f = redis.call('HMGET', k_wf(id), 'status', 'name', 'version')
if not f[1] then return {'missing'} end
if f[1] ~= 'VERSION_MISMATCH' then return {'not_halted', f[1]} end
local now = now_once()
if version_liveness(f[2], f[3], now) == 'other' then return {'still_missing', f[2] .. '@' .. f[3]} end
enqueue_step(id, now, true)
return {'ok'}
