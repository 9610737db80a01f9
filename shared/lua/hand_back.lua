-- A dispatcher hands back items its processing hash holds that it is not running: their claim's reply
-- never reached it (the connection broke after Redis ran the script). Each goes back on its ready queue
-- with a new lease, unless its lease changed meanwhile (committed, or recovered already).
-- KEYS[1] T; ARGV: G, worker, then (item, lease) pairs. Returns how many items were handed back.
local worker = ARGV[2]
local proc = k_proc(worker)
local now = now_once()
local handed = 0
for i = 3, #ARGV, 2 do
  if redis.call('HGET', proc, ARGV[i]) == ARGV[i + 1] then
    hand_back(worker, ARGV[i], now)
    handed = handed + 1
  end
end
return handed
