"""Lifecycle of a role process: run its loops, drain on SIGTERM/SIGINT, reconnect with backoff."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog

from bdurable.runtime.health import Health
from bdurable.store import REDIS_ERRORS

__all__ = [
    "REDIS_ERRORS",
    "StoppedWaitingForRedis",
    "Stopping",
    "new_worker_id",
    "retry_forever",
    "run_event_loop",
    "run_until_signalled",
]

T = TypeVar("T")

log = structlog.get_logger("bdurable.runtime")


def new_worker_id(role: str) -> str:
    """A unique, readable id for one process: role, host, pid and a random suffix."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class StoppedWaitingForRedis(Exception):
    """A role was asked to stop while it waited for Redis (starting, or in an outage): it ends at once, with
    nothing to drain (what it was about to do never reached Redis)."""


class Stopping:
    """Set when the process was asked to stop; loops check it and drain."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    @property
    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep, waking early on stop; returns True when stopping."""
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await self.event.wait()
        except TimeoutError:
            return False
        return True


def run_event_loop(main: Coroutine[Any, Any, T], choice: str = "asyncio") -> T:
    """Run a role's coroutine on the event loop of ``Settings.event_loop``: asyncio's own, or uvloop (an
    optional extra, ``b-durable[uvloop]``)."""
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise RuntimeError(
                "BDURABLE_EVENT_LOOP=uvloop, but uvloop is not installed: pip install 'b-durable[uvloop]'"
            ) from None
        return uvloop.run(main)
    return asyncio.run(main)


async def run_until_signalled(main: Callable[[Stopping], Awaitable[Any]]) -> None:
    """Run ``main`` until it returns; SIGTERM or SIGINT asks it to stop (it drains, then returns)."""
    stopping = Stopping()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await main(stopping)
    except StoppedWaitingForRedis:
        log.info("stopped while waiting for redis")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


class Backoff:
    """Capped exponential backoff through Redis outages: waits of 50 ms doubling to 2 s, back to the first
    after a success (``reset``).

    Its waits tick ``health`` at least every half second: a role waiting out an outage is alive (``/livez``
    never depends on Redis), only unready; else Kubernetes would restart every pod a liveness timeout into any
    outage. Without ``stopping`` it sleeps whatever happens (a commit or a read that must land, a start
    outside a role process), and without ``health`` it ticks nothing (the claim loop ticks for the
    dispatcher)."""

    def __init__(self, health: Health | None, stopping: Stopping | None = None, first: float = 0.05) -> None:
        self.health = health
        self.stopping = stopping
        self.first = first
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    async def wait(self) -> bool:
        """Wait the current delay, then double it; returns True when stopping (at once, not at its end)."""
        until = time.monotonic() + self.delay
        self.delay = min(self.delay * 2, 2.0)
        while (left := until - time.monotonic()) > 0:
            if self.stopping is None:
                await asyncio.sleep(min(left, 0.5))
            elif await self.stopping.sleep(min(left, 0.5)):
                return True
            if self.health is not None:
                self.health.tick()
        return False


async def retry_forever(what: str, operation: Callable[[], Awaitable[Any]], stopping: Stopping, health: Health) -> Any:
    """Retry an operation through Redis outages, with a :class:`Backoff` (never exits on them)."""
    backoff = Backoff(health, stopping)
    while True:
        health.tick()
        try:
            return await operation()
        except REDIS_ERRORS as exc:
            if stopping.is_set:
                raise StoppedWaitingForRedis from exc
            log.warning("redis unavailable, retrying", operation=what, error=str(exc), retry_in=round(backoff.delay, 2))
            if await backoff.wait():
                raise StoppedWaitingForRedis from exc
