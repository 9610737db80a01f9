"""The scheduler's loop: sleep until the earliest timer or schedule, fire what is due, keep the house clean.

It never polls on a coarse interval: each firing returns how long until the next timer (by the Redis
clock), and a script that adds an earlier timer or schedule publishes a hint on the timers channel that
wakes the scheduler at once. Several schedulers may run: firing a timer is one atomic script, so each timer
fires once; schedules are fired by one of them at a time (see :mod:`.schedules`), and the fleet-wide gauges
are exported by one of them at a time (so that a sum over schedulers counts each item once).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Any

import structlog

from bdurable.clock import SYSTEM_CLOCK, Clock
from bdurable.config import Settings
from bdurable.keys import Keys, ShardKeys
from bdurable.reads import Reads
from bdurable.runtime.health import Health
from bdurable.runtime.metrics import Metrics
from bdurable.runtime.role import role_runtime
from bdurable.runtime.service import REDIS_ERRORS, Stopping, new_worker_id, retry_forever
from bdurable.services.scheduler.schedules import DUTY as FIRING_SCHEDULES
from bdurable.services.scheduler.schedules import ScheduleFiring
from bdurable.store import Store

__all__ = ["Scheduler"]

log = structlog.get_logger("bdurable.scheduler")

FIRE_BATCH = 500
MAX_SLEEP = 5.0  # a safety net in case a hint is lost with a dropped connection; hints do the real work
FLEET_EXPORTER = "fleet-exporter"  # the duty of exporting the fleet-wide gauges


class Scheduler:
    def __init__(self, settings: Settings, *, worker_id: str | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock
        self.worker_id = worker_id or new_worker_id("scheduler")
        self.keys = Keys(settings.prefix, settings.shards)
        self.shards = self.keys.all_shards()
        self.fired = 0
        self.metrics = Metrics("scheduler")
        self.health = Health(30.0)
        self.lags_ms: list[int] = []
        self.set_aside_seen = 0  # the fleet's count of work set aside when last reported
        self.lease_ms = round(settings.heartbeat_timeout * 1000)  # duties move on after a holder's silence
        self.schedules = ScheduleFiring(self.worker_id, self.lease_ms, self.metrics)

    async def run(self, stopping: Stopping) -> None:
        structlog.contextvars.bind_contextvars(role="scheduler", worker=self.worker_id)
        async with role_runtime("scheduler", self.settings, stopping=stopping, clock=self.clock) as runtime:
            self.metrics, self.health = runtime.metrics, runtime.health
            self.schedules.metrics = runtime.metrics
            await self._serve(runtime.store, stopping)
        log.info("scheduler stopped", fired=self.fired)

    async def _serve(self, store: Store, stopping: Stopping) -> None:
        reads = Reads(store.redis, self.keys, store.codec, clock=self.clock)
        pubsub: Any = None
        try:
            pubsub = store.pubsub()
            await retry_forever("subscribe", lambda: pubsub.subscribe(self.keys.timers_channel), stopping, self.health)
            await retry_forever("check shards", store.check_shards, stopping, self.health)
            log.info("scheduler started")
            self.health.serving = True
            housekeeping_due = 0.0
            while not stopping.is_set:
                self.health.tick()
                try:
                    next_delay = _sooner(await self._fire_all(store), await self.schedules.fire_due(store, reads))
                    if time.monotonic() >= housekeeping_due:
                        await self._housekeeping(store)
                        housekeeping_due = time.monotonic() + self.settings.heartbeat_interval
                except REDIS_ERRORS as exc:
                    log.warning("redis unavailable, retrying", error=str(exc))
                    await stopping.sleep(0.5)
                    pubsub = await self._resubscribe(store, pubsub, stopping)
                    continue
                wait = min(MAX_SLEEP, housekeeping_due - time.monotonic())
                if next_delay >= 0:
                    wait = min(wait, next_delay / 1000)
                pubsub = await self._wait(store, pubsub, max(0.0, wait), stopping)
        finally:
            if pubsub is not None:
                with suppress(Exception):
                    await pubsub.aclose()
            await self._give_up_duties(store)

    async def _give_up_duties(self, store: Store) -> None:
        """A scheduler that stops hands its duties on at once, rather than after its leases lapse."""
        for duty in (FLEET_EXPORTER, FIRING_SCHEDULES):
            try:
                await store.release_lease(duty, self.worker_id)
            except REDIS_ERRORS as exc:
                log.warning("could not give up a duty; it lapses by itself", duty=duty, error=str(exc))

    async def _fire_all(self, store: Store) -> int:
        """Fire every due timer of every shard; returns ms until the next one (-1 when none)."""
        delays = await asyncio.gather(*(self._fire_shard(store, shard) for shard in self.shards))
        return _sooner(*delays)

    async def _fire_shard(self, store: Store, shard: ShardKeys) -> int:
        while True:
            fired = await store.fire_timers(shard, FIRE_BATCH)
            next_delay, lags = fired.next_in_ms, fired.lags_ms
            if lags:
                self.fired += len(lags)
                self.metrics.timers_fired.inc(len(lags))
                for lag in lags:
                    self.metrics.timer_lag.observe(lag / 1000)
                self.lags_ms.extend(lags)
                del self.lags_ms[:-1000]
                log.debug("timers fired", count=len(lags), max_lag_ms=max(lags))
            if len(lags) < FIRE_BATCH:
                return next_delay

    async def _housekeeping(self, store: Store) -> None:
        exporting = await store.lease(FLEET_EXPORTER, self.worker_id, self.lease_ms)
        if exporting != self.metrics.fleet.exporting:
            log.info("exporting the fleet-wide gauges" if exporting else "another scheduler exports the fleet gauges")
        self.metrics.export_fleet(exporting)
        for shard in self.shards:
            halted = await store.sweep_versions(shard)
            if halted:
                log.warning("workflows halted: no live dispatcher runs their version", count=halted)
            expired = await store.expire(shard, 1000)
            if expired:
                self.metrics.workflows_expired.inc(expired)
                log.info("finished workflows expired", count=expired)
        if exporting:
            await self._export_fleet(store)

    async def _export_fleet(self, store: Store) -> None:
        depth: dict[str, int] = {}
        oldest: dict[str, int] = {}
        timers = dlq = live = 0
        totals: dict[str, int] = {}
        held: dict[str, int] = {}
        for shard in self.shards:
            gauges = await store.gauges(shard)
            timers, dlq, live = timers + gauges.timers, dlq + gauges.dlq, live + gauges.live_dispatchers
            for name, value in gauges.totals.items():
                totals[name] = totals.get(name, 0) + value
            for task, value in gauges.held.items():
                held[task] = held.get(task, 0) + value
            for gauge in gauges.queues:
                depth[gauge.queue] = depth.get(gauge.queue, 0) + gauge.depth
                oldest[gauge.queue] = max(oldest.get(gauge.queue, -1), gauge.oldest_age_ms)
        self.metrics.timers_pending.set(timers)
        self.metrics.dlq_entries.set(dlq)
        self.metrics.live_dispatchers.set(live / len(self.shards))  # each dispatcher beats in every shard
        self.metrics.halted_total.set(totals.get("halted", 0))
        self.metrics.set_aside_total.set(totals.get("set_aside", 0))
        if totals.get("set_aside", 0) > self.set_aside_seen:
            await self._report_set_aside(store, totals["set_aside"] - self.set_aside_seen)
            self.set_aside_seen = totals["set_aside"]
        for name, value in totals.items():
            kind, _, rest = name.partition("\t")
            if kind == "throttled":
                task, _, reason = rest.rpartition("\t")
                self.metrics.throttled_total.set(value, task, reason)
        for task, value in held.items():
            self.metrics.throttled_waiting.labels(task).set(value)
        for queue, value in depth.items():
            self.metrics.queue_depth.labels(queue).set(value)
            self.metrics.queue_oldest_age.labels(queue).set(max(0, oldest[queue]) / 1000)

    async def _report_set_aside(self, store: Store, count: int) -> None:
        """Say what Redis could not read (the scripts set it aside and go on; nothing else would tell)."""
        waiting: dict[str, str] = {}
        for shard in self.shards:
            waiting |= await store.set_aside(shard)
        if not waiting:  # set aside before this scheduler started, and working again since
            return
        log.error(
            "work set aside: Redis could not read its data (a key of the wrong type under the prefix?); "
            "it is retried every minute until it works",
            count=count, waiting=dict(list(waiting.items())[:10]),
        )  # fmt: skip

    async def _wait(self, store: Store, pubsub: Any, seconds: float, stopping: Stopping) -> Any:
        """Sleep up to ``seconds``, waking on an earlier-timer hint or on stop."""
        deadline = time.monotonic() + seconds
        while not stopping.is_set:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return pubsub
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(remaining, 0.5))
            except REDIS_ERRORS:
                return await self._resubscribe(store, pubsub, stopping)
            if message is not None and message.get("type") == "message":
                return pubsub
        return pubsub

    async def _resubscribe(self, store: Store, pubsub: Any, stopping: Stopping) -> Any:
        with suppress(Exception):
            await pubsub.aclose()
        fresh = store.pubsub()
        try:
            await retry_forever("subscribe", lambda: fresh.subscribe(self.keys.timers_channel), stopping, self.health)
        except BaseException:  # stopped (or cancelled) before it subscribed: its connection goes back now
            with suppress(Exception):
                await fresh.aclose()
            raise
        return fresh


def _sooner(*delays: int) -> int:
    """The soonest of several ``ms until next`` figures, where -1 means never."""
    pending = [d for d in delays if d >= 0]
    return min(pending) if pending else -1
