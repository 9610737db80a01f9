"""Which workflow run is executing now: the one link from task definitions to the replay core.

Calling a task inside workflow code schedules it durably; outside, it runs directly. ``Task.__call__`` asks
this module which it is, so the definitions (``task``, ``workflow``) sit below the replay core and never import
it; the replay core sets the current run while workflow code runs.
"""

from __future__ import annotations

import contextvars
from collections.abc import Coroutine
from typing import Any, Protocol

__all__ = ["ActiveRun", "current_run", "running"]


class ActiveRun(Protocol):
    """What a task call needs from the run that makes it."""

    def call_task(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Coroutine[Any, Any, Any]: ...


_CURRENT: contextvars.ContextVar[ActiveRun | None] = contextvars.ContextVar("bdurable_current_run", default=None)


def current_run() -> ActiveRun | None:
    """The run whose workflow code is executing now, or ``None`` outside workflow code."""
    return _CURRENT.get()


def running(run: ActiveRun) -> contextvars.Context:
    """A copy of the current context in which ``run`` is the current run (workflow code runs in it)."""
    context = contextvars.copy_context()
    context.run(_CURRENT.set, run)
    return context
