"""The atomic state transitions, one Lua file each, loaded once and called by name.

The library is: the key helpers generated from :mod:`bdurable.keys` (the schema's only spelling), the clock
``now_ms()``, then ``lib.lua`` (the shared helpers and record builders). It is shipped two ways:

- as one Redis Function library (``FUNCTION LOAD``), every script a function of it (``FCALL``): the library is
  compiled and defined once per server, so a call runs only its script. This is the fast path: sent with
  every script, the library's ~150 definitions were re-created on each call and their garbage collected, the
  larger part of a call's time (docs/performance.md);
- as one self-contained script per transition (the library, then the script; ``EVALSHA``), for servers or
  ACL users where functions cannot be loaded. After a restart or failover the script cache may be empty
  (``NOSCRIPT``) and the caller reloads transparently (see :mod:`bdurable.store`).

Both run the same text; the library's name carries the hash of its code, so processes of two releases during a
rolling deploy each call their own.

The clock is the Redis server's (``TIME``), so machines' clocks never matter. Only :mod:`bdurable.testing`
loads the scripts with ``test_clock=True``, where ``now_ms()`` adds the offset of the shard's test-clock key:
a different source, hence different SHAs and another library; no setting or environment variable selects it,
so production can never run them by accident, and production's scripts never read that key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from bdurable.keys import lua_prelude

__all__ = ["SCRIPT_NAMES", "Library", "Script", "load_library", "load_scripts"]

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
    """One script: its name, its self-contained source (library included) with its SHA1 for EVALSHA, and the
    name of its function in the library for FCALL."""

    name: str
    source: str
    sha: str
    function: str


@dataclass(frozen=True, slots=True)
class Library:
    """The Redis Function library of every script: its name (with the hash of its code) and its source."""

    name: str
    source: str


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _parts(test_clock: bool) -> tuple[str, dict[str, str], str]:
    """The library text, each script's body, and the hash of them all (which names the library)."""
    library = f"{lua_prelude()}{_TEST_CLOCK if test_clock else _SERVER_CLOCK}\n{_read('lib')}"
    bodies = {name: _read(name) for name in SCRIPT_NAMES}
    digest = hashlib.sha1(library.encode())
    for name in SCRIPT_NAMES:
        digest.update(f"\0{name}\0{bodies[name]}".encode())
    return library, bodies, digest.hexdigest()[:20]


def load_scripts(*, test_clock: bool = False) -> dict[str, Script]:
    """Every script, each self-contained: the key helpers, the clock, the library, then its body."""
    library, bodies, digest = _parts(test_clock)
    scripts = {}
    for name in SCRIPT_NAMES:
        source = f"{library}\nbegin_call(KEYS, ARGV)\n-- ---- {name}.lua ----\n{bodies[name]}"
        scripts[name] = Script(name, source, hashlib.sha1(source.encode()).hexdigest(), f"bdurable_{digest}_{name}")
    return scripts


def load_library(*, test_clock: bool = False) -> Library:
    """The Function library: the library once, then each script as a function of it (its body, after
    ``begin_call``, in a function of ``KEYS`` and ``ARGV``)."""
    library, bodies, digest = _parts(test_clock)
    name = f"bdurable_{digest}"
    parts = [f"#!lua name={name}", library]
    for script in SCRIPT_NAMES:
        parts.append(f"redis.register_function('{name}_{script}', function(KEYS, ARGV)\nbegin_call(KEYS, ARGV)")
        parts.append(f"-- ---- {script}.lua ----\n{bodies[script]}\nend)")
    return Library(name, "\n".join(parts) + "\n")
