-- Claim up to N ready items for one dispatcher, in one round trip (the reliable-queue pattern; see lib.lua).
-- Continuations come first (work of workflows already running), so that under a backlog a running workflow
-- finishes before new ones start; new starts still get at least one item in eight of a claim of eight or more
-- while both wait, so they are never starved. Within each, higher priority first, then oldest first, across
-- all the dispatcher's queues.
-- KEYS[1] T; ARGV: G, worker, max items, then per ready queue: its continuation set and its new-start set
-- ('' for task queues). Returns the claims, in the format of `claim_step`/`claim_task` (lib.lua).
local worker, budget = ARGV[2], tonumber(ARGV[3])
local continuations, new_starts, queues = {}, {}, {}
for i = 4, #ARGV, 2 do
  table.insert(continuations, ARGV[i])
  if ARGV[i + 1] ~= '' then table.insert(new_starts, ARGV[i + 1]) end
  table.insert(queues, {ARGV[i], ARGV[i + 1]})
end
local claims = {}
local share = 0
if budget >= 8 and #new_starts > 0 then share = math.floor(budget / 8) end
local taken, stop, more = take_ordered(continuations, worker, budget - share, claims, false)
if not stop then
  local started
  started, stop = take_ordered(new_starts, worker, budget - taken, claims, false)
  taken = taken + started
end
-- Continuations again with what new starts left, unless the first pass read every list to its end (they are
-- empty now: an item queued meanwhile, as a limit's released slot may queue one, has its wake-up token).
if not stop and more then take_ordered(continuations, worker, budget - taken, claims, false) end
for _, queue in ipairs(queues) do rewake(queue[1], queue[2]) end
return claims
