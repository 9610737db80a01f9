"""The atomic state transitions, one Lua file each, loaded once and called by SHA.

Every script is sent as: the key helpers generated from :mod:`bdurable.keys` (the schema's only spelling), the
clock ``now_ms()``, then ``lib.lua`` (the shared helpers and record builders), then the script itself.
Scripts are sent with EVALSHA; after a Redis restart or failover the script cache is empty (``NOSCRIPT``) and
the caller reloads them transparently (see :mod:`bdurable.store`).

The clock is the Redis server's (``TIME``), so machines' clocks never matter. Only :mod:`bdurable.testing`
loads the scripts with ``test_clock=True``, where ``now_ms()`` adds the offset of the shard's test-clock key:
a different source, hence different SHAs; no setting or environment variable selects it, so production can
never run them by accident, and production's scripts never read that key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from bdurable.keys import lua_prelude

__all__ = ["SCRIPT_NAMES", "Script", "load_scripts"]

SCRIPT_NAMES = (
    "start",
    "claim",
    "commit_step",
    "commit_task",
    "fire_timers",
    "beat",
    "beat_shard",
    "leave",
    "hand_back",
    "leave_fleet",
    "sweep_versions",
    "resume",
    "expire",
    "bus_send",
    "bus_apply",
    "dlq_resolve",
    "dlq_purge",
    "reap",
    "settle_lost",
    "gauges",
    "x_apply",
    "admit",
    "schedule_write",
    "lease",
    "read_signals",
)

_SERVER_CLOCK = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_TEST_CLOCK = """
local function now_ms()
  local t = redis.call('TIME')
  local offset = tonumber(redis.call('GET', K_TEST_CLOCK) or '0')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + offset
end
"""


@dataclass(frozen=True, slots=True)
class Script:
    """One loaded script: its name, full source (library included) and SHA1."""

    name: str
    source: str
    sha: str


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def load_scripts(*, test_clock: bool = False) -> dict[str, Script]:
    """Read every script from the package, each prefixed with the key helpers, the clock and the library."""
    library = f"{lua_prelude()}{_TEST_CLOCK if test_clock else _SERVER_CLOCK}\n{_read('lib')}"
    scripts = {}
    for name in SCRIPT_NAMES:
        source = f"{library}\n-- ---- {name}.lua ----\n{_read(name)}"
        scripts[name] = Script(name, source, hashlib.sha1(source.encode()).hexdigest())
    return scripts
