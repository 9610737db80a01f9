-- Halt queued steps whose workflow version no live dispatcher runs while other versions of that workflow
-- are live (VERSION_MISMATCH; `bdurable resume` re-queues them). Runs after a dispatcher leaves, after the
-- reaper removes a dead one, and periodically in the scheduler.
-- KEYS[1] T; ARGV: G. Returns how many workflows were halted.
return sweep_versions(now_ms())
