"""A private event loop that runs workflow code until it can make no more progress.

Workflow code is ordinary asyncio code (``await``, ``asyncio.gather``, helper coroutines), but it must only
ever wait on durable calls, whose futures b-durable resolves itself. Running that code on its own loop lets
the engine tell exactly when a step is over: the moment an iteration of the loop schedules no new callback,
every coroutine of every cached workflow is blocked on a durable future, so the step's commands are complete.
This is the standard asyncio loop; only ``call_soon`` is counted and timers are refused. It runs nested in the
dispatcher's loop through ``asyncio._get_running_loop``/``_set_running_loop``, which ``asyncio.events`` exports
for event-loop implementations (uvloop uses them): see docs/architecture.md, "Replay". Their absence is
reported at import, never as a confusing failure mid-step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import Context
from typing import Any, TypeVarTuple

from bdurable.errors import WorkflowTimerError

__all__ = ["StepLoop", "WorkflowTimerError"]

if not all(hasattr(asyncio, name) for name in ("_get_running_loop", "_set_running_loop")):  # pragma: no cover
    raise ImportError(
        "this Python's asyncio lacks _get_running_loop/_set_running_loop, which b-durable's replay loop needs "
        "(CPython 3.11 to 3.14 have them)"
    )

Ts = TypeVarTuple("Ts")


class StepLoop(asyncio.SelectorEventLoop):
    """Runs workflow coroutines in bursts, synchronously, from inside the dispatcher's own loop."""

    def __init__(self) -> None:
        super().__init__()
        self._soon_count = 0
        self.set_exception_handler(_ignore_abandoned)

    def call_soon(
        self, callback: Callable[[*Ts], object], *args: *Ts, context: Context | None = None
    ) -> asyncio.Handle:
        self._soon_count += 1
        return super().call_soon(callback, *args, context=context)

    def call_at(
        self,
        when: float,
        callback: Callable[[*Ts], object],
        *args: *Ts,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        raise WorkflowTimerError(
            "workflow code must not use asyncio timers (asyncio.sleep, asyncio.wait_for, asyncio.timeout): "
            "use `await ctx.sleep(...)` or move the waiting into a task"
        )

    def run_until_quiet(self) -> None:
        """Run loop iterations until one schedules nothing new.

        Called from a coroutine of the dispatcher's loop: that loop is set aside for the duration (it is
        not re-entered; this call is synchronous) and restored afterwards.
        """
        outer = asyncio._get_running_loop()
        asyncio._set_running_loop(None)
        try:
            while True:
                self._soon_count = 0
                self.stop()  # stop() before run_forever(): exactly one iteration
                try:
                    self.run_forever()
                except (SystemExit, KeyboardInterrupt):
                    # Workflow code raised it in a task of its own (asyncio.gather of a coroutine that calls
                    # sys.exit): asyncio sets it as that task's exception, then lets it out of the loop. Whoever
                    # awaits the task gets it (the run turns it into the workflow's failure); the loop goes on.
                    continue
                if self._soon_count == 0:
                    return
        finally:
            asyncio._set_running_loop(outer)


def _ignore_abandoned(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Evicted or finished workflows leave futures nobody awaits; that is expected, not an error."""
