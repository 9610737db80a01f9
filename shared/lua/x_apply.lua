-- Apply on this shard an operation another shard left for it (carried by the signal bus): deliver a result to a
-- workflow, start or cancel a child, create or release a limited task, park, note, free or grant a slot.
-- Idempotent. KEYS[1] T (target); ARGV: G, message JSON, retention ms
RETENTION_MS = tonumber(ARGV[3])
apply_x(cjson.decode(ARGV[2]), now_once())
return 1
