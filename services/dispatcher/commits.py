"""Committing: a step's or a task attempt's commit, through Redis outages, and the work it hands back.

A commit is retried until it lands or its lease is known lost (the scripts are idempotent thanks to the lease:
a retry of a commit that did land is refused as stale, and the work it committed stands). The commit script
also claims the work it made ready on queues this dispatcher listens to (direct hand-off): the budget for that
is reserved in the slots while the commit is in flight, and the handed-off claims start here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from bdurable.runtime.faults import crash_point
from bdurable.runtime.metrics import Metrics
from bdurable.runtime.service import Backoff
from bdurable.services.dispatcher.slots import SlotLimiter
from bdurable.store import REDIS_ERRORS
from bdurable.wire import Claim, CommitReply

__all__ = ["Committer"]

log = structlog.get_logger("bdurable.dispatcher")


class Committer:
    def __init__(
        self, slots: SlotLimiter, spawn: Callable[[Claim], None], metrics: Metrics, check_held: asyncio.Event
    ) -> None:
        self.slots = slots
        self.spawn = spawn
        self.metrics = metrics
        self.check_held = check_held  # set when a commit failed: its reply (and a hand-off in it) may be lost
        self.committed = 0
        self.stale = 0

    async def commit(self, what: str, send: Callable[[int], Awaitable[CommitReply]]) -> CommitReply:
        """Send a commit (``send(hand-off budget)``) until it lands; start the work it handed off.

        The handed-off work begins running once the caller next yields, after the caller's own bookkeeping
        (such as caching its run).
        """
        crash_point("before_commit")
        budget = self.slots.handoff_budget()
        extra = max(0, budget - 1)  # the committed item's own slot is already counted as running
        self.slots.reserve(extra)
        backoff = Backoff(None)
        try:
            while True:
                try:
                    reply = await send(budget)
                    crash_point("after_commit")
                    break
                except REDIS_ERRORS as exc:
                    log.warning("commit failed, retrying", error=str(exc), retry_in=backoff.delay)
                    self.check_held.set()
                    await backoff.wait()
        finally:
            self.slots.release(extra)
        if reply.claims:
            self.metrics.handoffs.inc(len(reply.claims))
            for claim in reply.claims:
                self.spawn(claim)
        if reply.status == "stale":
            self.stale += 1
            self.metrics.stale_commits.inc()
            log.warning("commit rejected: the lease was lost to another dispatcher", commit=what)
        else:
            self.committed += 1
        return reply
