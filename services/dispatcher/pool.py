"""The work a dispatcher runs: one asyncio task per claimed item, its lease remembered until it ends.

Every claim (from the claim loop or handed off by a commit) becomes a task here, counted against the
dispatcher's slots. A suspect runs alone: it waits until nothing else runs, and nothing else starts meanwhile.
On drain, the work in flight gets a deadline; what is left is cancelled (and handed back by the dispatcher).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from bdurable.services.dispatcher.slots import SlotLimiter
from bdurable.wire import Claim

__all__ = ["WorkPool"]

log = structlog.get_logger("bdurable.dispatcher")

CANCEL_GRACE = 2.0  # seconds cancelled work gets to end (its cleanup, a commit on its way) before leaving

Work = Coroutine[Any, Any, None]


class WorkPool:
    def __init__(self, slots: SlotLimiter, run: Callable[[Claim], Work]) -> None:
        self.slots = slots
        self._run = run
        self.inflight: set[asyncio.Task[None]] = set()
        self.holding: dict[str, str] = {}  # item -> lease of every claim being run
        self.context = contextvars.copy_context()  # items start from this, not from their spawner's context

    def spawn(self, claim: Claim) -> None:
        item, lease = claim.item.encode(), claim.lease
        work = self._run(claim)
        if claim.suspect:  # a dispatcher died holding it with other work: run it alone, so a crash is its own
            self.slots.exclusive = True
            work = self._alone(work)
        self.holding[item] = lease
        self.slots.started()
        task = asyncio.create_task(work, context=self.context.copy())
        self.inflight.add(task)
        task.add_done_callback(functools.partial(self._done, item, lease))

    async def _alone(self, work: Work) -> None:
        """Wait until nothing else is in flight, run ``work``, then let claiming resume.

        Items can still arrive meanwhile (handed off by commits that were on their way), so this waits until
        none is left rather than for the ones in flight when it began.
        """
        try:
            current = asyncio.current_task()
            while others := [task for task in self.inflight if task is not current]:
                await asyncio.wait(others)
            await work
        finally:
            work.close()  # no-op when it ran; frees it when the wait was cancelled
            self.slots.exclusive = False
            self.slots.wake()

    def _done(self, item: str, lease: str, task: asyncio.Task[None]) -> None:
        if self.holding.get(item) == lease:
            del self.holding[item]
        self.inflight.discard(task)
        self.slots.finished()
        if not task.cancelled() and task.exception() is not None:
            log.error("work item crashed", error=repr(task.exception()))

    async def drain(self, timeout: float) -> int:
        """Let the work in flight finish, up to ``timeout`` seconds (including work handed off by commits
        already on their way); cancel what is left. Returns how many items were cut short."""
        if not self.inflight:
            return 0
        log.info("draining", in_flight=len(self.inflight))
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.wait(set(self.inflight), timeout=deadline - time.monotonic())
        return await self.cancel_all()

    async def cancel_all(self) -> int:
        """Cancel the work still in flight and wait until it has ended, up to ``CANCEL_GRACE`` seconds; returns
        how many items were cut short. Also for a drain that was itself cut short (an embedded ``Worker.stop``
        whose timeout ran out): no task of this dispatcher may run on once its role has returned. Work that
        ignores its cancellation is left behind, logged: the dispatcher leaves all the same, and its leaving
        voids the leases, so that work can never commit."""
        pending = set(self.inflight)
        for task in pending:
            task.cancel()
        if pending:
            _, stuck = await asyncio.wait(pending, timeout=CANCEL_GRACE)
            if stuck:
                log.warning("work did not end when cancelled; leaving without it", items=len(stuck))
        return len(pending)
