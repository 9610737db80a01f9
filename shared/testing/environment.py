"""``WorkflowEnvironment``: a Redis, the engine's roles in this process and a client, for tests; with time
skipping, a 7-day workflow finishes in well under a second.

Time skipping: the environment's roles run the engine's scripts in their test-clock variant (see
:mod:`bdurable.lua`), which add an offset stored in Redis under the environment's prefix to the server's clock;
the roles' Python code reads the same offset from the environment's :class:`TestClock` (``ctx.now()``, delayed
starts, schedules). Only this module makes such a clock and only for the objects it creates, so production code
never runs on it. While a test awaits a workflow's result through ``env.client`` (or the next item of its
``signals``/``watch`` stream), the environment watches the engine: when nothing can run (no ready step or task,
nothing in flight on its dispatcher, no message on the signal bus) and a timer is pending, it moves the clock to
that timer, and the scheduler fires it as if the time had come. ``await env.sleep("3 days")`` moves the clock on
explicitly, firing the timers on the way in order.

Heartbeats and leases count in the same clock, so a jump of days would make every role look dead: the
environment runs its roles with a heartbeat timeout of ten years (nothing is ever reaped in it; crash recovery
is tested with real processes, see ``tests/faults``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any, TypeVar

from bdurable.client import Client
from bdurable.clock import SYSTEM_CLOCK, Clock
from bdurable.config import Settings
from bdurable.durations import parse_duration
from bdurable.embedded import RedisServer
from bdurable.keys import Keys, ShardKeys
from bdurable.model import Signal
from bdurable.scheduling import Scheduled, run_in_progress
from bdurable.worker import ROLES, Worker

__all__ = ["TestClock", "WorkflowEnvironment"]

T = TypeVar("T")

TEN_YEARS = 10 * 365 * 86400.0
IDLE_CHECKS = 3  # consecutive idle looks (a few ms apart) before the clock moves: settled, not between two hops
POLL = 0.005
DUE_SCHEDULES_LOOKED_AT = 100  # the soonest entries of the schedules' due index read per look
EXPIRE_BATCH = 1000  # finished workflows removed per script call when the clock moves past their retention


class TestClock(Clock):
    """A clock that only moves forward, when the environment moves it."""

    __test__ = False  # not a pytest test class
    test = True


class _EnvironmentClient(Client):
    """``env.client``: a client whose waits for a result let the environment skip time meanwhile."""

    def __init__(self, environment: WorkflowEnvironment, settings: Settings) -> None:
        super().__init__(settings=settings)
        self._environment = environment
        self._clock = environment.clock

    async def result(self, workflow_id: str, timeout: float | None = None) -> Any:
        with self._environment._awaited():
            return await super().result(workflow_id, timeout=timeout)

    async def signals(self, workflow_id: str) -> AsyncIterator[Signal]:
        async for signal in self._awaiting(super().signals(workflow_id)):
            yield signal

    async def watch(self, workflow_id: str) -> AsyncIterator[dict[str, Any]]:
        async for change in self._awaiting(super().watch(workflow_id)):
            yield change

    async def _awaiting(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """The items of a stream that follows a workflow (until it ends), letting time skip while the test awaits
        the next one: not while the test handles one (it may act on the workflow before its next timer)."""
        try:
            while True:
                with self._environment._awaited():
                    try:
                        item = await anext(items)
                    except StopAsyncIteration:
                        return
                yield item
        finally:
            await items.aclose()  # type: ignore[attr-defined]  # Client's streams are async generators


def _environment_settings(*, embedded: bool) -> dict[str, str]:
    """The ``BDURABLE_*`` variables an environment takes from the shell (``BDURABLE_RETENTION`` and the rest,
    as a ``Worker`` does), but never the server or the prefix (the environment has its own: a test must never
    reach the Redis a shell points at), nor, on its own embedded server, replicas to wait for (it has none)."""
    skipped = {"BDURABLE_REDIS_URL", "BDURABLE_PREFIX"} | ({"BDURABLE_WAIT_REPLICAS"} if embedded else set())
    return {name: value for name, value in os.environ.items() if name not in skipped}


class WorkflowEnvironment:
    """An embedded Redis (or ``redis_url``), the roles in this process, and ``env.client``.

    ``apps`` are the modules (or import names) whose workflows and tasks the environment runs. Each
    environment uses a fresh key prefix, so environments can share one Redis (pass ``redis_url``: starting
    a server takes a few hundred milliseconds). With ``time_skipping=True`` the clock jumps to the next timer
    whenever every workflow waits while the test awaits one of them (a result, the next signal or change of
    ``signals``/``watch``); ``sleep`` moves it on explicitly.
    """

    __test__ = False

    def __init__(
        self,
        apps: Iterable[str | ModuleType] = (),
        *,
        redis_url: str | None = None,
        prefix: str | None = None,
        time_skipping: bool = False,
        concurrency: int = 50,
        roles: Iterable[str] = ROLES,
        settings: Settings | None = None,
    ) -> None:
        self.apps = list(apps)
        self.time_skipping = time_skipping
        self.clock: Clock = TestClock() if time_skipping else SYSTEM_CLOCK
        self._redis_url = redis_url
        self._prefix = prefix or f"test-{uuid.uuid4().hex[:12]}"
        self._concurrency = concurrency
        self._roles = tuple(roles)
        self._base = settings
        self._server: RedisServer | None = None
        self._worker: Worker | None = None
        self._client: _EnvironmentClient | None = None
        self._skipper: asyncio.Task[None] | None = None
        self._waiting = 0
        self._closing = False  # ends the skipper even where a cancellation is swallowed (inside a Redis call)
        self._moving = asyncio.Lock()
        self.settings: Settings | None = None

    @property
    def client(self) -> Client:
        """A connected client of the environment (its ``result`` waits let time skip)."""
        if self._client is None:
            raise RuntimeError("the environment is not running: use `async with WorkflowEnvironment(...) as env`")
        return self._client

    # -- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> WorkflowEnvironment:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    async def _start(self) -> None:
        url = self._redis_url
        if url is None:
            # Launched from this thread (the main one, as a rule: the server then dies with the test process,
            # even a SIGTERMed one), waited for in another, so that the loop keeps turning meanwhile.
            self._server = await asyncio.to_thread(RedisServer(appendonly=False).launch().wait_ready)
            url = self._server.url
        base = self._base or Settings.from_env(_environment_settings(embedded=self._server is not None), redis_url=url)
        overrides: dict[str, Any] = {"redis_url": url, "prefix": self._prefix}
        if self.time_skipping:
            overrides |= {"heartbeat_interval": 1.0, "heartbeat_timeout": TEN_YEARS}
        self.settings = base.with_overrides(**overrides)
        self._client = _EnvironmentClient(self, self.settings)
        await self._client.connect()
        if self.time_skipping:
            await self._write_offset(0)
        self._worker = Worker(
            self.apps, settings=self.settings, roles=self._roles, concurrency=self._concurrency, clock=self.clock
        )
        await self._worker.start()
        if self.time_skipping:
            self._skipper = asyncio.create_task(self._skip_while_waiting(), name="bdurable-time-skipping")

    async def _stop(self) -> None:
        self._closing = True
        if self._skipper is not None:
            self._skipper.cancel()
            await asyncio.gather(self._skipper, return_exceptions=True)
            self._skipper = None
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)
            self._server = None

    # -- time ---------------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The environment's current time (aware, UTC): what ``ctx.now()`` returns in its workflows."""
        return self.clock.now()

    async def sleep(self, duration: str | float | timedelta) -> None:
        """Let ``duration`` pass: with time skipping, the clock moves on through every timer due meanwhile (each
        fires in order, and what it wakes runs before the clock moves past the next); otherwise a real sleep."""
        seconds = parse_duration(duration)
        if not self.time_skipping:
            await asyncio.sleep(seconds)
            return
        target = await self._now_ms() + round(seconds * 1000)
        while True:
            await self._settled()
            due = await self._next_due()
            now = await self._now_ms()
            if due is None or due > target:
                await self._move_to(target)
                await self._settled()
                return
            await self._move_to(max(due, now))

    @contextlib.contextmanager
    def _awaited(self) -> Iterator[None]:
        """While the test awaits a workflow through ``env.client``: time may skip meanwhile."""
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    async def _skip_while_waiting(self) -> None:
        """While a result is awaited and nothing can run, jump to the next timer."""
        idle_looks = 0
        while not self._closing:
            await asyncio.sleep(POLL)
            if self._waiting <= 0 or self._moving.locked():
                idle_looks = 0
                continue
            if not await self._idle():
                idle_looks = 0
                continue
            idle_looks += 1
            if idle_looks < IDLE_CHECKS:
                continue
            idle_looks = 0
            due = await self._next_due()
            if due is not None and due > await self._now_ms():
                await self._move_to(due)

    async def _move_to(self, when_ms: int) -> None:
        async with self._moving:
            now = await self._now_ms()
            if when_ms > now:
                await self._write_offset(self.clock.offset_ms + when_ms - now)
                await self.client.store.redis.publish(self._keys.timers_channel, str(when_ms))  # wake schedulers
                await self._expire_finished()

    async def _expire_finished(self) -> None:
        """Expire what finished more than the retention ago, now: the scheduler sweeps once a second of real
        time, so without this a workflow would still be there right after ``env.sleep`` went past its expiry."""
        store = self.client.store
        for shard in self._keys.all_shards():
            while await store.expire(shard, EXPIRE_BATCH) == EXPIRE_BATCH:
                pass

    async def _settled(self, timeout: float = 30.0) -> None:
        """Wait until nothing can run (what the clock may have woken has run)."""
        async with asyncio.timeout(timeout):
            idle_looks = 0
            while idle_looks < IDLE_CHECKS:
                await asyncio.sleep(POLL)
                idle_looks = idle_looks + 1 if await self._idle() and not await self._due_now() else 0

    # -- what the engine holds ------------------------------------------------------------------------

    @property
    def _keys(self) -> Keys:
        assert self.settings is not None
        return Keys(self.settings.prefix, self.settings.shards)

    async def _now_ms(self) -> int:
        return await self.client.reads.now_ms()

    async def _write_offset(self, offset_ms: int) -> None:
        """The offset every script of the environment adds to the server's clock, and the roles' Python too.

        Python's first: a timer the scripts fire at the new time runs its step at once, and that step's
        ``ctx.now()`` must not read the old time (the workflow would see less time pass than it slept). The
        clock moves only while every workflow waits, so the one step that could read Python's new time before
        the scripts see it is one that something else (the test itself) woke during these few writes."""
        keys = self._keys
        redis = self.client.store.redis
        self.clock.offset_ms = offset_ms
        for tag in [shard.tag for shard in keys.all_shards()] + [keys.tag]:
            await redis.set(f"{tag}:testclock", offset_ms)

    async def _next_due(self) -> int | None:
        """When the next timer or schedule is due (ms, the environment's clock), if any."""
        redis = self.client.store.redis
        found: list[int] = []
        for key in [shard.timers for shard in self._keys.all_shards()]:
            first: list[tuple[str, float]] = await redis.zrange(key, 0, 0, withscores=True)  # type: ignore[assignment]
            found += [int(score) for _, score in first]
        timer = min(found) if found else None
        schedule = await self._next_schedule_due(timer)
        return timer if schedule is None else schedule

    async def _next_schedule_due(self, before: int | None) -> int | None:
        """When the next schedule is due, if sooner than ``before`` (else ``None``).

        A schedule whose next firing waits behind a run in progress (``buffer_*``, ``cancel_other``) is due a
        second after each look, to look again: production has no better signal for that run's end. Here nothing
        but the timers and events counted elsewhere can end that run, so while it is active only the schedule's
        own next time counts (else the clock would creep a second at a time); once it ended, the look counts.
        """
        redis = self.client.store.redis
        entries: list[tuple[str, float]] = await redis.zrange(  # type: ignore[assignment]
            self._keys.schedules_due, 0, DUE_SCHEDULES_LOOKED_AT - 1, withscores=True
        )
        soonest: int | None = None
        for schedule_id, score in entries:
            due: int | None = int(score)
            limit = soonest if soonest is not None else before
            if limit is not None and int(score) >= limit:
                break  # ordered by score, and a schedule is never due sooner than its score
            fields = await self.client.reads.schedule(str(schedule_id))
            if fields is not None:
                scheduled = Scheduled(str(schedule_id), fields)
                if scheduled.state.buffered and await run_in_progress(self.client.reads, scheduled):
                    due = scheduled.state.next_due_ms if not scheduled.spec.paused else None
            if due is not None and (limit is None or due < limit):
                soonest = due
        return soonest

    async def _due_now(self) -> bool:
        due = await self._next_due()
        return due is not None and due <= await self._now_ms()

    async def _idle(self) -> bool:
        """Nothing can run: no ready step or task, nothing held by a dispatcher, nothing on the signal bus."""
        for shard in self._keys.all_shards():
            if await self._shard_busy(shard):
                return False
        return True

    async def _shard_busy(self, shard: ShardKeys) -> bool:
        redis = self.client.store.redis
        async with redis.pipeline(transaction=False) as pipe:
            pipe.smembers(shard.step_queues)
            pipe.smembers(shard.task_queues)
            pipe.zrange(shard.workers, 0, -1)
            pipe.zrange(shard.bus_alive, 0, -1)
            pipe.llen(shard.bus)
            step_lists, task_lists, workers, buses, bus_depth = await pipe.execute()
        if bus_depth:
            return True
        async with redis.pipeline(transaction=False) as pipe:
            for member in step_lists:
                queue, name, version = _fields(member, 3)
                pipe.zcard(shard.step_queue(queue, name, version))
                pipe.zcard(shard.step_new(queue, name, version))
            for member in task_lists:
                queue, task = _fields(member, 2)
                pipe.zcard(shard.task_queue(queue, task))
            for worker in workers:
                pipe.hlen(shard.processing(str(worker)))
            for bus in buses:
                pipe.llen(shard.bus_forward(str(bus)))
            sizes = await pipe.execute()
        return any(int(size) for size in sizes)


def _fields(member: object, count: int) -> list[str]:
    """A ready list's registry member (``queue\tname\tversion`` or ``queue\ttask``) split into its parts."""
    parts = str(member).split("\t", count - 1)
    if len(parts) != count:
        raise ValueError(f"unexpected ready list member {member!r}")
    return parts
