"""``Worker``: the engine's roles in this process, for embedding, notebooks and tests.

In production each role runs as its own process (``bdurable dispatcher``, ``bdurable scheduler``, ...), so each
scales and fails on its own. A ``Worker`` runs the same role code as asyncio tasks of the caller's event loop:
the same scripts, the same guarantees (a worker stopped abruptly is recovered by any reaper like a dead
process), one process. It is what ``bdurable.testing.WorkflowEnvironment`` is built on.

Usage::

    async with Worker(apps=["myapp.workflows"], redis_url="redis://localhost:6379/0"):
        ...  # workflows of myapp run while the block runs; leaving it drains the dispatcher
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any, Protocol

from bdurable.clock import SYSTEM_CLOCK, Clock
from bdurable.config import Settings, redact_url

__all__ = ["ROLES", "Worker"]

ROLES = ("dispatcher", "scheduler", "reaper", "signal_bus")
READY_TIMEOUT = 60.0  # how long start() waits for every role to serve (Redis reachable, dispatcher registered)


class _Role(Protocol):
    """What every role object offers (bdurable.services.*)."""

    health: Any
    metrics: Any

    async def run(self, stopping: Any) -> None: ...


class Worker:
    """Runs ``roles`` of the engine in this process until stopped (``async with`` starts and stops it).

    ``apps`` are the modules (or their import names) whose workflows and tasks the dispatcher runs; the other
    roles need none. ``concurrency`` and ``queues`` are the dispatcher's (``bdurable dispatcher
    --concurrency/--queue``). ``cache_size`` is how many workflow runs the dispatcher keeps in memory between
    steps (0: every step replays from the recorded history, which tests of replay want). Settings come from
    ``settings``, else the environment, with ``redis_url``/``prefix`` on top; the roles' HTTP endpoint is never
    started (one process, several roles: read metrics with :meth:`sample`).
    """

    def __init__(
        self,
        apps: Iterable[str | ModuleType] = (),
        *,
        redis_url: str | None = None,
        prefix: str | None = None,
        settings: Settings | None = None,
        roles: Sequence[str] = ROLES,
        concurrency: int = 50,
        queues: Sequence[str] | None = None,
        cache_size: int | None = None,
        worker_id: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        unknown = [role for role in roles if role not in ROLES]
        if unknown or not roles:
            raise ValueError(f"unknown role(s) {unknown or list(roles)}: choose from {', '.join(ROLES)}")
        base = settings or Settings.from_env()
        self.settings = dataclasses.replace(base.with_overrides(redis_url=redis_url, prefix=prefix), metrics_port=None)
        self.apps = list(apps)
        self.roles = tuple(dict.fromkeys(roles))
        if "dispatcher" in self.roles and not self.apps:
            raise ValueError("a dispatcher needs apps: the modules that define its workflows and tasks")
        self.concurrency = concurrency
        self.queues = list(queues) if queues else None
        self.cache_size = cache_size
        self.worker_id = worker_id
        self._clock = clock  # bdurable.testing's environment passes its test clock; nothing else does
        self._running: dict[str, tuple[_Role, asyncio.Task[None]]] = {}
        self._roles: list[_Role] = []  # kept after stop: their metrics stay readable
        self._stopping: Any = None
        self._starting = False  # start() is on its way (checking Redis, waiting for the roles to serve)
        self._stop_asked = False  # a stop() came while starting: start() starts nothing more and returns

    # -- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self, *, ready_timeout: float = READY_TIMEOUT) -> None:
        """Start the roles and return once every one serves; a role that fails to start raises here.

        A ``stop()`` that comes while this starts wins: the roles are stopped (or never started) when it
        returns, and this returns without error, the worker not running."""
        if self._running or self._starting:
            raise RuntimeError("this worker is running already")
        self._starting, self._stop_asked = True, False
        try:
            await self._start(ready_timeout)
        finally:
            self._starting = False

    async def _start(self, ready_timeout: float) -> None:
        from bdurable.runtime.service import Stopping

        # Not cancelled halfway: a cluster client cancelled while it maps the cluster leaves node connections
        # open (redis-py); a stop that comes meanwhile waits for the check (seconds at most) and its clean-up.
        check = asyncio.ensure_future(self._check_redis())
        try:
            await asyncio.shield(check)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await check
            raise
        if self._stop_came():
            return  # stopped before any role started
        self._stopping = Stopping()
        self._roles = []
        for name in self.roles:
            role = self._make(name)
            self._roles.append(role)
            self._running[name] = (role, asyncio.create_task(role.run(self._stopping), name=f"bdurable-{name}"))
        try:
            async with asyncio.timeout(ready_timeout):
                while not all(role.health.serving for role, _ in self._running.values()):
                    if self._stop_came():
                        return  # stop() stopped the roles meanwhile
                    self._raise_if_stopped()
                    await asyncio.sleep(0.01)
        except TimeoutError:
            waiting = [name for name, (role, _) in self._running.items() if not role.health.serving]
            await self.stop()
            raise TimeoutError(
                f"the {', '.join(waiting)} role(s) did not start serving within {ready_timeout:g} s "
                f"(Redis at {redact_url(self.settings.redis_url)} went away meanwhile? see the roles' log lines)"
            ) from None
        except BaseException:
            await self.stop()
            raise

    async def _check_redis(self) -> None:
        """Reach Redis once, as a client does, before any role starts: the roles themselves wait out an outage
        (as production processes must), so an unreachable server or a wrong setting would otherwise surface only
        as ``start()``'s timeout, a minute later."""
        from bdurable.store import Store

        store = await Store.connected(self.settings, clock=self._clock)
        await store.close()

    async def stop(self, *, timeout: float = 60.0) -> None:
        """Stop every role the way SIGTERM stops a process: the dispatcher drains, then everything returns.
        Work still running after ``timeout`` seconds is cancelled (as the end of a process ends it)."""
        if self._starting:
            self._stop_asked = True  # start() starts nothing more
        if not self._running:
            return
        self._stopping.set()
        tasks = [task for _, task in self._running.values()]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()

    @property
    def running(self) -> bool:
        """Whether the roles run (started and none has stopped)."""
        return bool(self._running) and all(not task.done() for _, task in self._running.values())

    def _stop_came(self) -> bool:
        """Whether a stop() came since start() began (read through a call: it changes across awaits)."""
        return self._stop_asked

    def _raise_if_stopped(self) -> None:
        for name, (_, task) in self._running.items():
            if task.done():
                error = None if task.cancelled() else task.exception()
                raise RuntimeError(f"the {name} role stopped while starting: {error!r}") from error

    def _make(self, name: str) -> _Role:
        """The role object (imported here: the roles import the package this module is part of)."""
        settings, clock, worker_id = self.settings, self._clock, self.worker_id
        if name == "dispatcher":
            from bdurable.registry import Registry
            from bdurable.services.dispatcher import Dispatcher

            options: dict[str, Any] = {"concurrency": self.concurrency, "queues": self.queues, "clock": clock}
            if self.cache_size is not None:
                options["cache_size"] = self.cache_size
            return Dispatcher(settings, Registry.from_modules(self.apps), worker_id=worker_id, **options)
        if name == "scheduler":
            from bdurable.services.scheduler import Scheduler

            return Scheduler(settings, clock=clock)
        if name == "reaper":
            from bdurable.services.reaper import Reaper

            return Reaper(settings, clock=clock)
        from bdurable.services.signal_bus import SignalBus

        return SignalBus(settings, clock=clock)

    # -- what the roles report --------------------------------------------------------------------------

    def sample(self, metric: str, /, **labels: str) -> float | None:
        """The value of one metric sample of this worker's roles (as ``/metrics`` would show it), or ``None``:
        ``worker.sample("bdurable_task_attempts_total", task="charge", outcome="ok")`` (any label, ``name`` too)."""
        for role in self._roles:
            value = role.metrics.registry.get_sample_value(metric, labels)
            if value is not None:
                return float(value)
        return None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Worker {', '.join(self.roles)} on {self.settings.prefix!r} ({state})>"
