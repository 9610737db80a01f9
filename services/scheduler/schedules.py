"""The scheduler's share of schedules: fire every due schedule, while this process holds the duty.

One scheduler at a time fires schedules (a lease, renewed on every pass, taken over when its holder stops
renewing). The lease saves work only: a firing is idempotent (the run's id is derived from the schedule and
the time, and the schedule's new state is written compare-and-set), so two schedulers that both believe they
hold it start nothing twice.
"""

from __future__ import annotations

import time

import structlog

from bdurable.errors import DurableError
from bdurable.reads import Reads
from bdurable.runtime.metrics import Metrics
from bdurable.scheduling import fire_schedule
from bdurable.store import Store

__all__ = ["ScheduleFiring"]

log = structlog.get_logger("bdurable.scheduler")

DUTY = "schedules"
RETRY_FIRST = 1.0  # a schedule that cannot fire (its workflow is not registered) is retried after this ...
RETRY_MOST = 30.0  # ... doubling up to this


class ScheduleFiring:
    def __init__(self, worker_id: str, lease_ms: int, metrics: Metrics) -> None:
        self.worker_id = worker_id
        self.lease_ms = lease_ms
        self.metrics = metrics
        self.holding = False
        self._retry: dict[str, tuple[float, float]] = {}  # schedule id -> (monotonic time to retry, backoff)

    async def fire_due(self, store: Store, reads: Reads) -> int:
        """Fire what is due; returns ms until the next schedule is due (-1: none, or another process fires)."""
        holding = await store.lease(DUTY, self.worker_id, self.lease_ms)
        if holding != self.holding:
            self.holding = holding
            log.info("firing schedules" if holding else "another scheduler fires schedules")
        if not holding:
            return self.lease_ms // 3  # look again in time to take over from a holder that stopped
        now = await reads.now_ms()
        for schedule_id in await reads.due_schedules(now):
            retry_at, backoff = self._retry.get(schedule_id, (0.0, RETRY_FIRST / 2))
            if time.monotonic() < retry_at:
                continue
            try:
                await self._fire(store, reads, schedule_id, now)
                self._retry.pop(schedule_id, None)
            except DurableError as exc:  # e.g. no dispatcher registers its workflow (yet): the time stays due
                backoff = min(backoff * 2, RETRY_MOST)
                self._retry[schedule_id] = (time.monotonic() + backoff, backoff)
                log.warning("schedule cannot fire yet", schedule=schedule_id, error=str(exc), retry_in_s=backoff)
        return await self._next_in_ms(reads)

    async def _next_in_ms(self, reads: Reads) -> int:
        """Ms until the next schedule to fire: the first due one, a schedule waiting to retry counting from
        its retry time."""
        now_ms, now = await reads.now_ms(), time.monotonic()
        waiting = {sid for sid, (retry_at, _) in self._retry.items() if retry_at > now}
        times = [round((self._retry[sid][0] - now) * 1000) for sid in waiting]
        for schedule_id, due in await reads.next_schedules(len(waiting) + 1):
            if schedule_id not in waiting:
                times.append(due - now_ms)
                break
        return max(0, min(times)) if times else -1

    async def _fire(self, store: Store, reads: Reads, schedule_id: str, now: int) -> None:
        decided = await fire_schedule(store, reads, schedule_id, now_ms=now)
        if decided is None:
            return
        for firing in decided.start:
            self.metrics.schedule_firings.labels(schedule_id).inc()
            self.metrics.schedule_lag.observe(max(0, now - firing.start_at_ms) / 1000)
            log.info("schedule fired", schedule=schedule_id, workflow_id=firing.workflow_id)
        for reason, count in decided.skipped.items():
            self.metrics.schedule_skips.labels(schedule_id, reason).inc(count)
            log.info("scheduled times skipped", schedule=schedule_id, reason=reason, count=count)
