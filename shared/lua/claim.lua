-- Claim up to N ready items for one dispatcher, in one round trip (the reliable-queue pattern).
-- Each item moves into the dispatcher's processing hash with a fresh lease token; a commit must present
-- that token, so work handed to someone else can never be committed by its former holder.
-- KEYS[1] T; ARGV: G, worker, max items, ready list 1, ready list 2, ...
-- Returns a list of claims:
--   {'w', id, lease, name, version, status, input, inbox_start, committed_len, inbox..., '|', calls...}
--   inbox_start is where the dispatcher's cached copy stopped, or -1 (no copy: whole inbox and the call
--   records follow); committed_len is -1 before the first commit
--   {'t', id, seq, lease, task hash fields...}
-- 'W' and 'T' mark a suspect, claimed alone: the dispatcher must run it with nothing else in flight.
local worker, budget = ARGV[2], tonumber(ARGV[3])
local claims = {}
for i = 4, #ARGV do
  if budget <= 0 then break end
  budget = claim_from(ARGV[i], worker, budget, claims)
end
return claims
