"""The dispatcher role: claims ready workflow steps and tasks, runs them, commits their results.

A dispatcher listens on the ready queues of the workflow versions and task queues it holds. It claims ready
items in batches with one script call (the items move into its processing hash with a lease), runs workflow
steps by replay and tasks as coroutines or threads, and commits each result with one script that checks the
lease. A commit also claims the work it made ready on queues this dispatcher listens to (direct hand-off), so
a workflow's next step or task starts without a wake-up and a claim round trip. The parts, one module each:
the claim loop (``claiming``), the slots (``slots``), the running work (``pool``), steps (``steps``), task
attempts (``tasks``, ``attempts``), commits (``commits``) and lost claims (``recovery``); this module starts
them, beats, drains and leaves.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import structlog

from bdurable.clock import SYSTEM_CLOCK, Clock
from bdurable.codec import dumps
from bdurable.config import Settings
from bdurable.keys import Keys, ShardKeys
from bdurable.naming import check_queue
from bdurable.reads import Reads
from bdurable.registry import Registry
from bdurable.runtime.health import Health
from bdurable.runtime.metrics import Metrics
from bdurable.runtime.role import role_runtime
from bdurable.runtime.service import Stopping, new_worker_id, retry_forever
from bdurable.services.dispatcher.claiming import ClaimLoop
from bdurable.services.dispatcher.commits import Committer
from bdurable.services.dispatcher.pool import WorkPool
from bdurable.services.dispatcher.recovery import LostClaims
from bdurable.services.dispatcher.slots import SlotLimiter
from bdurable.services.dispatcher.steps import RunCache, StepRunner
from bdurable.services.dispatcher.tasks import TaskRunner
from bdurable.store import REDIS_ERRORS, ReadyQueue, Store
from bdurable.wire import Claim, StepClaim

__all__ = ["Dispatcher"]

log = structlog.get_logger("bdurable.dispatcher")

CLAIM_BATCH = 64


class Dispatcher:
    """One dispatcher process's work."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        concurrency: int = 50,
        queues: list[str] | None = None,
        worker_id: str | None = None,
        drain_timeout: float | None = None,
        cache_size: int = 10_000,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if not registry.workflows and not registry.tasks:
            raise ValueError("the --app modules define no workflow and no task")
        self.settings = settings
        self.registry = registry
        self.concurrency = concurrency
        self.queues = sorted(
            {check_queue(q, "--queue") for q in queues} if queues else (registry.queues() or {"default"})
        )
        self.worker_id = worker_id or new_worker_id("dispatcher")
        self.drain_timeout = settings.drain_timeout if drain_timeout is None else drain_timeout
        self.clock = clock
        self.keys = Keys(settings.prefix, settings.shards)
        self.shards = self.keys.all_shards()
        self.held = [w for w in registry.workflows.values() if w.queue in self.queues]
        self.versions = [(w.name, w.version) for w in self.held]
        # Per shard: the ready queues this dispatcher listens to (its workflow versions' steps, its task queues).
        self.ready_queues = {
            shard.tag: [
                ReadyQueue(shard.step_queue(w.queue, w.name, w.version), shard.step_new(w.queue, w.name, w.version))
                for w in self.held
            ]
            + [ReadyQueue(shard.task_queue(t.queue, t.name)) for t in registry.tasks.values() if t.queue in self.queues]
            for shard in self.shards
        }
        self.slots = SlotLimiter(concurrency, batch=CLAIM_BATCH)
        self.cache = RunCache(cache_size, max_bytes=settings.run_cache_bytes)
        self.metrics = Metrics("dispatcher")
        self.health = Health(30.0)
        self.pool = WorkPool(self.slots, self._work)
        self._check_held = asyncio.Event()  # a claim or commit failed: its reply may have been lost
        self._steps: StepRunner | None = None
        self._tasks: TaskRunner | None = None
        self._committer: Committer | None = None

    @property
    def inflight(self) -> set[asyncio.Task[None]]:
        return self.pool.inflight

    @property
    def stale_commits(self) -> int:
        return self._committer.stale if self._committer is not None else 0

    # -- lifecycle ------------------------------------------------------------------------------------

    async def run(self, stopping: Stopping) -> None:
        structlog.contextvars.bind_contextvars(role="dispatcher", worker=self.worker_id)
        self.pool.context = contextvars.copy_context()  # items start from this context, with the role bound
        async with role_runtime("dispatcher", self.settings, stopping=stopping, clock=self.clock) as runtime:
            self.metrics, self.health = runtime.metrics, runtime.health
            try:
                await self._serve(runtime.store, stopping)
            finally:
                if self._steps is not None:
                    self._steps.close()
        committer = self._committer
        log.info(
            "dispatcher stopped",
            committed=committer.committed if committer else 0,
            stale_commits=committer.stale if committer else 0,
        )

    async def _serve(self, store: Store, stopping: Stopping) -> None:
        reads = Reads(store.redis, self.keys, clock=self.clock)
        committer = self._committer = Committer(self.slots, self.pool.spawn, self.metrics, self._check_held)
        common: dict[str, Any] = {
            "worker_id": self.worker_id, "settings": self.settings, "registry": self.registry, "store": store,
            "committer": committer, "metrics": self.metrics,
        }  # fmt: skip
        self._steps = StepRunner(**common, reads=reads, cache=self.cache, clock=self.clock)
        self._tasks = TaskRunner(**common, steps=self._steps, threads=self.concurrency)
        await retry_forever("register", lambda: self._register(store), stopping, self.health)
        self.health.serving = True
        log.info(
            "dispatcher started",
            workflows=[f"{name}@{version}" for name, version in self.versions],
            tasks=sorted(self.registry.tasks),
            queues=self.queues,
            concurrency=self.concurrency,
        )
        claims = ClaimLoop(
            worker_id=self.worker_id, store=store, shards=self.shards, queues=self.ready_queues, slots=self.slots,
            spawn=self.pool.spawn, metrics=self.metrics, health=self.health, check_held=self._check_held,
        )  # fmt: skip
        lost = LostClaims(
            worker_id=self.worker_id, store=store, reads=reads, shards=self.shards, holding=self.pool.holding,
            heartbeat_interval=self.settings.heartbeat_interval, check_now=self._check_held,
        )  # fmt: skip
        drained = Stopping()  # heartbeats and cancel hints go on while in-flight work drains
        helpers = [
            asyncio.create_task(self._heartbeats(store)),
            asyncio.create_task(self._tasks.cancel_hints(drained)),
            asyncio.create_task(lost.run(stopping)),
        ]
        try:
            await claims.run(stopping)
            self.health.serving = False
            cut = await self.pool.drain(self.drain_timeout)
            if cut:
                log.warning("drain timed out; unfinished work is handed back", handed_back=cut)
        finally:
            try:
                await self.pool.cancel_all()  # work is left only when the role itself was cancelled mid-drain
            finally:  # cancelled again meanwhile (a stop that was itself cancelled): still stop beating, and leave
                drained.set()
                for helper in helpers:
                    helper.cancel()
                    with suppress(asyncio.CancelledError):
                        await helper
                await self._leave(store)

    def _work(self, claim: Claim) -> Any:
        """The coroutine that runs one claimed item."""
        assert self._steps is not None
        assert self._tasks is not None
        return self._steps.run(claim) if isinstance(claim, StepClaim) else self._tasks.run(claim)

    # -- heartbeats -----------------------------------------------------------------------------------

    async def _register(self, store: Store) -> None:
        await store.check_shards()
        info = dumps(
            {
                "workflows": [f"{name}@{version}" for name, version in self.versions],
                "tasks": sorted(self.registry.tasks),
                "queues": self.queues,
                "concurrency": self.concurrency,
            }
        )
        registrations: list[str] = []
        for w in self.held:
            entry = {"name": w.name, "version": w.version, "queue": w.queue, "schema": w.input_schema}
            registrations += [f"{w.name}@{w.version}", dumps(entry)]
        await self._beat(store, info, registrations)

    async def _beat(self, store: Store, info: str = "", registrations: list[str] | None = None) -> None:
        timeout_ms = round(self.settings.heartbeat_timeout * 1000)
        registered, *_ = await asyncio.gather(
            store.beat(self.worker_id, timeout_ms, self.slots.running, info, registrations or []),
            *(
                store.beat_shard(shard, self.worker_id, timeout_ms, self.versions, self.ready_queues[shard.tag])
                for shard in self.shards
            ),
        )
        if not registered:  # Redis came back without its data: starts by name need the registry again
            log.warning("registration lost in Redis (restarted empty?): registering again")
            await self._register(store)

    async def _heartbeats(self, store: Store) -> None:
        """Beat until cancelled: after the drain, not when stopping begins. A draining dispatcher still holds
        its in-flight work; were it to stop beating, the reaper would hand that work to another dispatcher after
        the heartbeat timeout, the task would run twice, and the drain's commit would be refused as stale.

        One loop per shard, and one for the fleet's registry: on a Redis Cluster a primary that hangs (frozen,
        cut off by the network) holds up the beats of its own shards only. Awaited together, the shards still
        up would go unbeaten meanwhile, and the reaper, in contact with them, would reap this live dispatcher
        there."""
        beaten = dict.fromkeys(["fleet", *(shard.tag for shard in self.shards)], time.monotonic())

        async def beat_forever(name: str, beat: Callable[[], Awaitable[object]]) -> None:
            while True:
                await asyncio.sleep(self.settings.heartbeat_interval)
                try:
                    await beat()
                    beaten[name] = time.monotonic()
                except REDIS_ERRORS as exc:
                    log.warning("heartbeat failed", error=str(exc), shard=name)
                self.metrics.heartbeat_age.set(time.monotonic() - min(beaten.values()))

        timeout_ms = round(self.settings.heartbeat_timeout * 1000)

        async def beat_fleet() -> None:
            if not await store.beat(self.worker_id, timeout_ms, self.slots.running, "", []):
                log.warning("registration lost in Redis (restarted empty?): registering again")
                await self._register(store)

        def beat_shard(shard: ShardKeys) -> Callable[[], Awaitable[object]]:
            return lambda: store.beat_shard(
                shard, self.worker_id, timeout_ms, self.versions, self.ready_queues[shard.tag]
            )

        async with asyncio.TaskGroup() as loops:  # one loop ending with an error ends them all, as one loop did
            loops.create_task(beat_forever("fleet", beat_fleet))
            for shard in self.shards:
                loops.create_task(beat_forever(shard.tag, beat_shard(shard)))

    async def _leave(self, store: Store) -> None:
        """Hand back what is still held, stop being live for our versions, halt orphaned steps."""
        try:
            for shard in self.shards:
                await store.leave(shard, self.worker_id, self.versions)
                halted = await store.sweep_versions(shard)
                if halted:
                    log.warning("workflows halted: no live dispatcher runs their version", count=halted)
            await store.leave_fleet(self.worker_id)
        except REDIS_ERRORS as exc:
            log.warning("could not unregister; the reaper will recover held work", error=str(exc))
