"""The reaper role."""
