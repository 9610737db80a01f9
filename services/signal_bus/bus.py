"""The signal bus's loop: wait for a wake-up token, apply messages in atomic batches.

Producers (clients, the CLI, workflow commits) push messages on the shard's bus list and return; the bus
applies each with one script (``bus_apply.lua``): an event wakes its waiter or is buffered, a keyed publish
wakes every waiter of (name, key), a cancellation enters the workflow's inbox, a signal is published on
pub/sub. Only the script pops messages, in order; an idle bus blocks on a wake-up token (BLPOP), so a bus
never holds a message outside Redis and several buses keep each workflow's events in order.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

import structlog

from bdurable.clock import SYSTEM_CLOCK, Clock
from bdurable.config import Settings
from bdurable.keys import Keys, ShardKeys
from bdurable.runtime.health import Health
from bdurable.runtime.metrics import Metrics
from bdurable.runtime.role import role_runtime
from bdurable.runtime.service import REDIS_ERRORS, Backoff, Stopping, new_worker_id, retry_forever
from bdurable.store import Store
from bdurable.wire import forwarded_shard

__all__ = ["SignalBus"]

log = structlog.get_logger("bdurable.signal_bus")

BATCH = 200
BLOCK_SECONDS = 1


class SignalBus:
    def __init__(self, settings: Settings, *, worker_id: str | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock
        self.worker_id = worker_id or new_worker_id("signal-bus")
        self.keys = Keys(settings.prefix, settings.shards)
        self.shards = self.keys.all_shards()
        self.metrics = Metrics("signal-bus")
        self.health = Health(30.0)
        self.totals = {"delivered": 0, "buffered": 0, "dropped": 0, "published": 0, "cancelled": 0}

    async def run(self, stopping: Stopping) -> None:
        structlog.contextvars.bind_contextvars(role="signal-bus", worker=self.worker_id)
        async with role_runtime("signal-bus", self.settings, stopping=stopping, clock=self.clock) as runtime:
            self.metrics, self.health = runtime.metrics, runtime.health
            await self._serve(runtime.store, stopping)
        log.info("signal bus stopped", **self.totals)

    async def _serve(self, store: Store, stopping: Stopping) -> None:
        await retry_forever("check shards", store.check_shards, stopping, self.health)
        log.info("signal bus started", shards=len(self.shards))
        self.health.serving = True
        await asyncio.gather(*(self._serve_shard(store, shard, stopping) for shard in self.shards))
        self.health.serving = False

    async def _serve_shard(self, store: Store, shard: ShardKeys, stopping: Stopping) -> None:
        """One shard's loop: apply a batch; when there was nothing, block until a message arrives."""
        lease_ms = round(self.settings.heartbeat_timeout * 1000)
        wake = shard.bus_wake
        backoff = Backoff(self.health, stopping)
        while not stopping.is_set:
            self.health.tick()
            try:
                applied = await self._apply(store, shard, BATCH, lease_ms)
                backoff.reset()
                if applied == 0:
                    await store.redis.blpop([wake], BLOCK_SECONDS)
            except REDIS_ERRORS as exc:
                log.warning("redis unavailable, retrying", error=str(exc), retry_in=backoff.delay)
                await backoff.wait()
        # Operations this bus took for another shard are carried over before it leaves.
        with suppress(*REDIS_ERRORS):
            await self._apply(store, shard, 0, lease_ms)

    async def _apply(self, store: Store, shard: ShardKeys, batch: int, lease_ms: int) -> int:
        """Apply messages on one shard, then carry its cross-shard operations to their shards."""
        applied = await store.bus_apply(shard, self.worker_id, batch, lease_ms)
        for message in applied.forwarded:
            target = self.keys.shard(forwarded_shard(message))
            await store.apply_forwarded(target, message)  # idempotent: safe to repeat after a crash
            await store.forwarded(shard, self.worker_id, message)
        counts = {
            "delivered": applied.delivered, "buffered": applied.buffered, "dropped": applied.dropped,
            "published": applied.published, "cancelled": applied.cancelled,
        }  # fmt: skip
        for name, value in counts.items():
            self.totals[name] += value
        for outcome in ("delivered", "buffered", "dropped"):
            self.metrics.events.labels(outcome).inc(counts[outcome])
        self.metrics.signals_published.inc(applied.published)
        self.metrics.cancellations.inc(applied.cancelled)
        return sum(counts.values()) + len(applied.forwarded)
