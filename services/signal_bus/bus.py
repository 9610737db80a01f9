"""The signal bus's loop: block on the inbound list, apply messages in atomic batches.

Producers (clients, the CLI, workflow commits) push messages on the shard's bus list and return; the bus
applies each with one script (``bus_apply.lua``): an event wakes its waiter or is buffered, a keyed publish
wakes every waiter of (name, key), a cancellation enters the workflow's inbox, a signal is published on
pub/sub. While idle the bus blocks with BLMOVE, which moves the next message into the bus's own list, so a
crash between the pop and the apply loses nothing: a live bus puts a dead bus's list back.
"""

from __future__ import annotations

from contextlib import suppress

import structlog

from bdurable.config import Settings
from bdurable.keys import Keys
from bdurable.runtime.health import Health
from bdurable.runtime.metrics import Metrics
from bdurable.runtime.role import role_runtime
from bdurable.runtime.service import REDIS_ERRORS, Stopping, new_worker_id
from bdurable.store import Store

__all__ = ["SignalBus"]

log = structlog.get_logger("bdurable.signal_bus")

BATCH = 200
BLOCK_SECONDS = 1


class SignalBus:
    def __init__(self, settings: Settings, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or new_worker_id("signal-bus")
        self.keys = Keys(settings.prefix)
        self.shard = self.keys.shard(0)
        self.metrics = Metrics("signal-bus")
        self.health = Health(30.0)
        self.totals = {"delivered": 0, "buffered": 0, "dropped": 0, "published": 0, "cancelled": 0}

    async def run(self, stopping: Stopping) -> None:
        structlog.contextvars.bind_contextvars(role="signal-bus", worker=self.worker_id)
        async with role_runtime("signal-bus", self.settings) as runtime:
            self.metrics, self.health = runtime.metrics, runtime.health
            await self._serve(runtime.store, stopping)
        log.info("signal bus stopped", **self.totals)

    async def _serve(self, store: Store, stopping: Stopping) -> None:
        lease_ms = round(self.settings.heartbeat_timeout * 1000)
        inbound = f"{self.shard.tag}:bus"
        own = f"{self.shard.tag}:bus:proc:{self.worker_id}"
        log.info("signal bus started")
        self.health.serving = True
        delay = 0.05
        while not stopping.is_set:
            self.health.tick()
            try:
                counts = await store.shard_script("bus_apply", self.shard, self.worker_id, BATCH, lease_ms)
                delay = 0.05
                if self._count(counts) == 0:
                    await store.redis.blmove(inbound, own, BLOCK_SECONDS, "RIGHT", "LEFT")
            except REDIS_ERRORS as exc:
                log.warning("redis unavailable, retrying", error=str(exc), retry_in=delay)
                await stopping.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.health.serving = False
        # A message moved into our list during the last block is applied before leaving.
        with suppress(*REDIS_ERRORS):
            self._count(await store.shard_script("bus_apply", self.shard, self.worker_id, 0, lease_ms))

    def _count(self, counts: list[int]) -> int:
        for name, value in zip(self.totals, counts, strict=True):
            self.totals[name] += int(value)
        delivered, buffered, dropped, published, cancelled = (int(v) for v in counts)
        self.metrics.events.labels("delivered").inc(delivered)
        self.metrics.events.labels("buffered").inc(buffered)
        self.metrics.events.labels("dropped").inc(dropped)
        self.metrics.signals_published.inc(published)
        self.metrics.cancellations.inc(cancelled)
        return sum(int(v) for v in counts)
