"""Crash points for fault tests: inert unless ``BDURABLE_CRASH_AT`` is set.

``BDURABLE_CRASH_AT=before_commit:3`` makes the process die (``os._exit``, like SIGKILL: no cleanup, no
flush) the third time it reaches the point named ``before_commit``. Tests use it to kill a dispatcher at
every named point of its cycle and prove that recovery keeps every guarantee. Points:

- ``after_claim``: items claimed (moved into the processing hash), nothing run yet
- ``in_task``: inside a task attempt, before the task's function returns
- ``before_commit``: a step or task attempt finished, its commit not yet sent
- ``after_commit``: the commit applied (what comes next enqueued, or handed off to this dispatcher and so
  held by it), not yet acknowledged locally

and one of the scheduler:

- ``mid_firing``: a schedule's runs started, its new state not yet written
"""

from __future__ import annotations

import os
import sys

__all__ = ["CRASH_POINTS", "SCHEDULER_CRASH_POINTS", "crash_point"]

CRASH_POINTS = ("after_claim", "in_task", "before_commit", "after_commit")  # the dispatcher's
SCHEDULER_CRASH_POINTS = ("mid_firing",)

_target, _, _count = os.environ.get("BDURABLE_CRASH_AT", "").partition(":")
_remaining = int(_count or "1") if _target else 0


def crash_point(name: str) -> None:
    """Die here if this is the configured crash point's n-th passage (a no-op in production)."""
    global _remaining
    if not _target or name != _target:
        return
    _remaining -= 1
    if _remaining == 0:
        sys.stderr.write(f"bdurable: crash point {name} reached, exiting\n")
        sys.stderr.flush()
        os._exit(137)
