"""What every role process shares while it runs: metrics, health and the HTTP endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from bdurable.config import Settings
from bdurable.runtime.health import Health, HealthServer
from bdurable.runtime.metrics import Metrics, PayloadBytes
from bdurable.runtime.service import REDIS_ERRORS
from bdurable.store import Store

__all__ = ["RoleRuntime", "role_runtime"]

log = structlog.get_logger("bdurable.runtime")


@dataclass
class RoleRuntime:
    store: Store
    metrics: Metrics
    health: Health


async def _initialize(store: Store) -> None:
    """Retry until Redis answers: a role started before Redis waits for it instead of exiting."""
    delay = 0.1
    while True:
        try:
            await store.initialize()
            return
        except REDIS_ERRORS as exc:
            log.warning("redis unavailable at start, retrying", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


@asynccontextmanager
async def role_runtime(role: str, settings: Settings, *, stall_after: float = 30.0) -> AsyncIterator[RoleRuntime]:
    """Connect to Redis, start the metrics/health endpoint when ``metrics_port`` is set, clean up after."""
    store = Store.from_settings(settings, service=f"bdurable-{role}")
    await _initialize(store)
    runtime = RoleRuntime(store, Metrics(role), Health(stall_after))
    runtime.metrics.registry.register(PayloadBytes(store.codec))
    server = None
    if settings.metrics_port is not None:
        server = HealthServer(
            port=settings.metrics_port,
            host=settings.metrics_host,
            health=runtime.health,
            metrics=runtime.metrics,
            ping=store.redis.ping,
        )
        await server.start()
        log.info("metrics and health endpoint listening", host=settings.metrics_host, port=server.port)
    try:
        yield runtime
    finally:
        runtime.health.serving = False
        if server is not None:
            await server.stop()
        await store.close()
        store.tracing.flush()  # spans still batched go out before the process ends
