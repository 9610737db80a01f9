"""The atomic state transitions, one Lua file each, loaded once and called by SHA.

``lib.lua`` (shared helpers and the key schema's Lua mirror) is prepended to every script. Scripts are
sent with EVALSHA; after a Redis restart or failover the script cache is empty (``NOSCRIPT``) and the
caller reloads them transparently (see :mod:`bdurable.store`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

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
    "gauges",
    "x_apply",
)


@dataclass(frozen=True, slots=True)
class Script:
    """One loaded script: its name, full source (library included) and SHA1."""

    name: str
    source: str
    sha: str


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def load_scripts() -> dict[str, Script]:
    """Read every script from the package, each prefixed with the shared library."""
    library = _read("lib")
    scripts = {}
    for name in SCRIPT_NAMES:
        source = f"{library}\n-- ---- {name}.lua ----\n{_read(name)}"
        scripts[name] = Script(name, source, hashlib.sha1(source.encode()).hexdigest())
    return scripts
