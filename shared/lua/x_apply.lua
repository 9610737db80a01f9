-- Apply on this shard an operation another shard left for it (carried by the signal bus): deliver a child's
-- result to its parent, cancel a child, start a child. Idempotent. KEYS[1] T (target); ARGV: G, message JSON
apply_x(cjson.decode(ARGV[2]), now_ms())
return 1
