"""Concurrent ``result()`` calls of one workflow share one wait for its finish.

A hundred calls waiting for the same workflow make one subscription and one state read per look, not a hundred:
under a burst of waiters the reads would otherwise crowd the connection pool until some waiters never got a
connection in time. Each call keeps its own timeout and its own cancellation; the shared wait ends when it has
the finish, or as soon as nobody waits for it any more.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from bdurable.model import WorkflowState

__all__ = ["FinishWaits", "LastSeen", "SharedWait"]


@dataclasses.dataclass(slots=True)
class LastSeen:
    """The status a wait last read, for a timeout's message: a wait that read ``AWAITING_EVENT`` a moment ago
    is a different problem from one that never got an answer from Redis."""

    status: str | None = None

    def note(self, state: WorkflowState) -> WorkflowState:
        self.status = state.status
        return state


@dataclasses.dataclass(eq=False, slots=True)
class SharedWait:
    task: asyncio.Task[WorkflowState]
    seen: LastSeen
    callers: int = 0

    async def finished(self) -> WorkflowState:
        """The finished state, once the shared wait has it (a caller's cancellation never cancels it for others)."""
        return await asyncio.shield(self.task)


WaitForFinish = Callable[[str, LastSeen], Coroutine[Any, Any, WorkflowState]]


class FinishWaits:
    def __init__(self, wait_for_finish: WaitForFinish) -> None:
        self._wait_for_finish = wait_for_finish
        self._waits: dict[str, SharedWait] = {}

    @asynccontextmanager
    async def join(self, workflow_id: str) -> AsyncIterator[SharedWait]:
        """The wait for ``workflow_id``'s finish, started by the first caller and shared until the last leaves."""
        shared = self._waits.get(workflow_id)
        if shared is None:
            seen = LastSeen()
            task = asyncio.get_running_loop().create_task(self._wait_for_finish(workflow_id, seen))
            shared = self._waits[workflow_id] = SharedWait(task, seen)
            task.add_done_callback(lambda done: self._ended(workflow_id, shared, done))
        shared.callers += 1
        try:
            yield shared
        finally:
            shared.callers -= 1
            if shared.callers == 0 and not shared.task.done():  # nobody waits any more: stop, and forget it now
                self._forget(workflow_id, shared)
                shared.task.cancel()

    def _ended(self, workflow_id: str, shared: SharedWait, task: asyncio.Task[WorkflowState]) -> None:
        self._forget(workflow_id, shared)
        if not task.cancelled():
            task.exception()  # each caller raises it; marked as seen even when all of them left

    def _forget(self, workflow_id: str, shared: SharedWait) -> None:
        if self._waits.get(workflow_id) is shared:
            del self._waits[workflow_id]

    def cancel_all(self) -> None:
        for shared in list(self._waits.values()):
            shared.task.cancel()
        self._waits.clear()
