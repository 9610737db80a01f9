"""What every role process shares while it runs: metrics, health and the HTTP endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from bdurable.clock import SYSTEM_CLOCK, Clock
from bdurable.config import Settings
from bdurable.runtime.health import Health, HealthServer
from bdurable.runtime.metrics import Metrics, PayloadBytes
from bdurable.runtime.service import REDIS_ERRORS, Backoff, StoppedWaitingForRedis, Stopping
from bdurable.store import Store

__all__ = ["RoleRuntime", "role_runtime"]

log = structlog.get_logger("bdurable.runtime")


@dataclass
class RoleRuntime:
    store: Store
    metrics: Metrics
    health: Health
    clock: Clock


async def _initialize(store: Store, health: Health, stopping: Stopping | None) -> None:
    """Retry until Redis answers: a role started before Redis waits for it instead of exiting (its ``/livez``
    stays 200 meanwhile: it is alive, only not ready). A stop asked meanwhile ends the role at once."""
    backoff = Backoff(health, stopping, first=0.1)
    while True:
        health.tick()
        try:
            await store.initialize()
            return
        except REDIS_ERRORS as exc:
            log.warning("redis unavailable at start, retrying", error=str(exc), retry_in=backoff.delay)
            if await backoff.wait():
                raise StoppedWaitingForRedis from None


@asynccontextmanager
async def role_runtime(
    role: str,
    settings: Settings,
    *,
    stopping: Stopping | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> AsyncIterator[RoleRuntime]:
    """Start the metrics/health endpoint (when ``metrics_port`` is set) at once, before Redis is reached, so
    that probes see a live process whatever Redis does; then connect; clean up after."""
    store = Store.from_settings(settings, clock=clock, service=f"bdurable-{role}")
    runtime = RoleRuntime(store, Metrics(role), Health(settings.liveness_timeout), clock)
    runtime.metrics.registry.register(PayloadBytes(store.codec))
    server = None
    try:
        if settings.metrics_port is not None:
            server = HealthServer(
                port=settings.metrics_port,
                host=settings.metrics_host,
                health=runtime.health,
                metrics=runtime.metrics,
                ping=store.ping,
            )
            try:
                await server.start()
            except OSError as exc:  # a port in use, a host that is not this machine's: the setting is wrong
                where = f"{settings.metrics_host}:{settings.metrics_port}"
                why = exc.strerror or str(exc)
                raise ValueError(f"cannot serve /metrics, /livez and /readyz on {where}: {why}") from None
            log.info("metrics and health endpoint listening", host=settings.metrics_host, port=server.port)
        await _initialize(store, runtime.health, stopping)
        yield runtime
    finally:
        runtime.health.serving = False
        if server is not None:
            await server.stop()
        await store.close()
        store.tracing.flush()  # spans still batched go out before the process ends
