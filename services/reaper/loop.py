"""The reaper's loop: every heartbeat interval, recover the work of dispatchers whose lease expired.

Outage amnesia guard: after Redis was unreachable (or this reaper just started), every heartbeat may
look expired at once because no dispatcher could beat meanwhile. The reaper therefore only reaps a shard after
it has been in continuous contact with that shard for a whole heartbeat timeout, which gives every live
dispatcher time to beat again. Contact is per shard: on a Redis Cluster one primary may be down while the
others answer (and PING, which no slot routes, reaches a node that is up), so each pass sends one cheap keyed
read to every shard. Several reapers may run: the reap is one atomic script per shard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from bdurable.clock import SYSTEM_CLOCK, Clock
from bdurable.config import Settings
from bdurable.keys import Keys, ShardKeys
from bdurable.reads import Reads
from bdurable.retry import RetryPolicy
from bdurable.runtime.health import Health
from bdurable.runtime.metrics import Metrics
from bdurable.runtime.role import role_runtime
from bdurable.runtime.service import REDIS_ERRORS, Stopping, new_worker_id, retry_forever
from bdurable.store import Store
from bdurable.wire import ErrorRecord, LostAttempt

__all__ = ["Reaper"]

log = structlog.get_logger("bdurable.reaper")

MAX_WORKERS_PER_PASS = 100
MAX_STEP_CRASHES = 5


class Reaper:
    def __init__(self, settings: Settings, *, worker_id: str | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock
        self.worker_id = worker_id or new_worker_id("reaper")
        self.keys = Keys(settings.prefix, settings.shards)
        self.metrics = Metrics("reaper")
        self.health = Health(30.0)
        self.totals = {"workers": 0, "steps": 0, "tasks": 0, "dead_lettered": 0, "failed": 0, "halted": 0}

    async def run(self, stopping: Stopping) -> None:
        structlog.contextvars.bind_contextvars(role="reaper", worker=self.worker_id)
        async with role_runtime("reaper", self.settings, stopping=stopping, clock=self.clock) as runtime:
            self.metrics, self.health = runtime.metrics, runtime.health
            await self._serve(runtime.store, stopping)
        log.info("reaper stopped", **self.totals)

    async def _serve(self, store: Store, stopping: Stopping) -> None:
        await retry_forever("check shards", store.check_shards, stopping, self.health)
        log.info("reaper started")
        self.health.serving = True
        interval, timeout = self.settings.heartbeat_interval, self.settings.heartbeat_timeout
        contact = ShardContact(timeout, fresh_within=min(interval, timeout / 4))

        async def probe(shard: ShardKeys) -> None:
            try:
                await store.redis.zcard(shard.workers)
            except REDIS_ERRORS as exc:
                contact.heard(shard.tag, reached=False, error=exc)
            else:
                contact.heard(shard.tag, reached=True)

        while not await stopping.sleep(interval if contact.any else 0.5):
            self.health.tick()
            shards = self.keys.all_shards()
            await asyncio.gather(*(probe(shard) for shard in shards))
            due = [shard for shard in shards if contact.reapable(shard.tag)]
            if due:
                for tag in await self.reap_once(store, due, still=lambda shard: contact.reapable(shard.tag)):
                    contact.heard(tag, reached=False)

    async def reap_once(
        self, store: Store, shards: list[ShardKeys] | None = None, still: Callable[[ShardKeys], bool] | None = None
    ) -> list[str]:
        """One pass over these shards (every shard by default), each reaped only if ``still`` says so when its
        turn comes (a pass whose first shards failed slowly may reach the last ones after an outage they did
        not see); returns the tags of those Redis did not answer (an outage: their contact starts again)."""
        found = dict.fromkeys(self.totals, 0)
        unanswered: list[str] = []
        retention_ms = round(self.settings.retention * 1000)
        for shard in shards if shards is not None else self.keys.all_shards():
            if still is not None and not still(shard):
                continue  # probed again, and reaped if it may be, on the next pass
            try:
                reaped = await store.reap(
                    shard, max_workers=MAX_WORKERS_PER_PASS, max_step_crashes=MAX_STEP_CRASHES,
                    retention_ms=retention_ms,
                )  # fmt: skip
                retried, dead = await self._settle(store, shard, reaped.lost)
            except REDIS_ERRORS as exc:
                log.warning("reap failed", error=str(exc), shard=shard.tag)
                unanswered.append(shard.tag)
                continue
            found["workers"] += reaped.workers
            found["steps"] += reaped.steps
            found["tasks"] += reaped.tasks + retried
            found["dead_lettered"] += dead
            found["failed"] += reaped.failed
            found["halted"] += reaped.halted
        if found["workers"] or found["tasks"] or found["dead_lettered"]:
            log.warning("dead dispatchers reaped", **found)
            self.metrics.reaped_workers.inc(found["workers"])
            self.metrics.reaped_items.labels("step").inc(found["steps"] + found["failed"])
            self.metrics.reaped_items.labels("task").inc(found["tasks"] + found["dead_lettered"])
            for name, value in found.items():
                self.totals[name] += value
        if found["workers"]:
            try:
                await self._forget_dead(store)
            except REDIS_ERRORS as exc:  # the registry for operators: the next pass forgets them
                log.warning("forgetting dead dispatchers failed", error=str(exc))
        return unanswered

    async def _settle(self, store: Store, shard: ShardKeys, lost: list[LostAttempt]) -> tuple[int, int]:
        """Task attempts that died with their dispatcher failed: the retry policy says when to retry each."""
        if not lost:
            return 0, 0
        decisions = []
        for attempt in lost:
            error = ErrorRecord(
                "WorkerLostError", f"the dispatcher running attempt {attempt.attempts} died ({attempt.worker})"
            )
            delay = RetryPolicy(attempt.max_attempts, attempt.backoff_ms).delay_after(attempt.attempts)
            decisions.append((attempt, delay, error))
        return await store.settle_lost(shard, decisions)

    async def _forget_dead(self, store: Store) -> None:
        """Drop expired dispatchers from the fleet-wide registry that operators read."""
        for worker in await Reads(store.redis, self.keys, clock=self.clock).expired_workers():
            await store.leave_fleet(worker)


class ShardContact:
    """Per shard, since when this reaper has been in unbroken contact with it (the outage amnesia guard).

    A shard may be reaped after a heartbeat timeout of contact, and only while its last answer is recent
    (``fresh_within``, well under the timeout): an outage that began after that answer cannot have lasted long
    enough to expire a live dispatcher's heartbeat there.
    """

    def __init__(self, timeout: float, *, fresh_within: float) -> None:
        self.timeout = timeout
        self.fresh_within = fresh_within
        self._since: dict[str, float] = {}  # shard tag -> start of the current run of contact
        self._last: dict[str, float] = {}  # shard tag -> when it last answered

    @property
    def any(self) -> bool:
        return bool(self._since)

    def heard(self, tag: str, *, reached: bool, error: object = None) -> None:
        now = time.monotonic()
        if not reached:
            if self._since.pop(tag, None) is not None:
                log.warning("lost contact with redis", shard=tag, error=str(error) if error else None)
            self._last.pop(tag, None)
            return
        if tag not in self._since or now - self._last.get(tag, now) > self.timeout:
            self._since[tag] = now  # a gap: give every dispatcher one more timeout to beat again
        self._last[tag] = now

    def reapable(self, tag: str) -> bool:
        since, last, now = self._since.get(tag), self._last.get(tag), time.monotonic()
        if since is None or last is None:
            return False
        return now - since >= self.timeout and now - last <= self.fresh_within
