"""The dispatcher's loops: heartbeat, claim, run, commit, drain.

A dispatcher listens on the ready lists of the workflow versions and task queues it holds. It claims
ready items in batches with one script call (the items move into its processing hash with a lease), runs
workflow steps by replay and tasks as coroutines or threads, and commits each result with one script that
checks the lease. Concurrent commits share pipelined round trips (see ``Store.script``). A commit also
claims the work it made ready on lists this dispatcher listens to (direct hand-off), so a workflow's next
step or task starts without a wake-up and a claim round trip.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections import OrderedDict
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any

import structlog

from bdurable.codec import dumps, loads
from bdurable.config import Settings
from bdurable.keys import Keys, ShardKeys
from bdurable.registry import Registry
from bdurable.replay.loop import StepLoop
from bdurable.replay.run import WorkflowRun
from bdurable.runtime.faults import crash_point
from bdurable.runtime.health import Health
from bdurable.runtime.metrics import Metrics
from bdurable.runtime.role import role_runtime
from bdurable.runtime.service import REDIS_ERRORS, Stopping, new_worker_id, retry_forever
from bdurable.services.dispatcher.attempts import run_attempt
from bdurable.services.dispatcher.payloads import corrupt_history_payload, step_payload
from bdurable.store import Store

__all__ = ["Dispatcher"]

log = structlog.get_logger("bdurable.dispatcher")

CLAIM_BATCH = 64
WAKE_TIMEOUT = 1.0
LOST_CLAIM_CHECKS = 25  # heartbeat intervals between two checks for claims whose reply never arrived


class Dispatcher:
    """One dispatcher process's work loop."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        concurrency: int = 50,
        queues: list[str] | None = None,
        worker_id: str | None = None,
        drain_timeout: float = 25.0,
        cache_size: int = 10_000,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if not registry.workflows and not registry.tasks:
            raise ValueError("the --app modules define no workflow and no task")
        self.settings = settings
        self.registry = registry
        self.concurrency = concurrency
        self.queues = sorted(set(queues) if queues else (registry.queues() or {"default"}))
        self.worker_id = worker_id or new_worker_id("dispatcher")
        self.drain_timeout = drain_timeout
        self.cache_size = cache_size
        self.keys = Keys(settings.prefix, settings.shards)
        self.shards: list[ShardKeys] = self.keys.all_shards()
        self.loop = StepLoop()
        self.cache: OrderedDict[str, WorkflowRun] = OrderedDict()
        self.inflight: set[asyncio.Task[None]] = set()
        self.capacity = asyncio.Event()
        self.store: Store | None = None
        self.metrics = Metrics("dispatcher")
        self.health = Health(30.0)
        self._last_beat = time.monotonic()
        self.held = [w for w in registry.workflows.values() if w.queue in self.queues]
        # Per shard: the ready lists this dispatcher listens to (its workflow versions' steps, its task queues).
        self.ready_lists = {
            shard.tag: [shard.step_queue(w.queue, w.name, w.version) for w in self.held]
            + [shard.task_queue(t.queue, t.name) for t in registry.tasks.values() if t.queue in self.queues]
            for shard in self.shards
        }
        self._rotation = 0
        self._accepting = False  # claiming new work (false while starting and draining)
        self._reserved = 0  # slots promised to hand-offs whose commit is still in flight
        self._context = contextvars.copy_context()
        self._woken = asyncio.Event()
        self._exclusive = False  # a suspect is running alone: claim nothing until it is done
        self.holding: dict[str, str] = {}  # item -> lease of every claim this dispatcher is running
        self._check_held = asyncio.Event()  # a claim or commit failed: its reply may have been lost
        self.running_tasks: dict[str, asyncio.Task[Any]] = {}  # "id|seq" -> the handler running it
        self.released: set[str] = set()  # running calls whose cancel hint arrived
        self.committed = 0
        self.stale_commits = 0

    # -- lifecycle ------------------------------------------------------------------------------------

    async def run(self, stopping: Stopping) -> None:
        structlog.contextvars.bind_contextvars(role="dispatcher", worker=self.worker_id)
        self._context = contextvars.copy_context()  # work items start from this, not from their spawner's
        async with role_runtime("dispatcher", self.settings) as runtime:
            self.store, self.metrics, self.health = runtime.store, runtime.metrics, runtime.health
            await self._serve(stopping)
        log.info("dispatcher stopped", committed=self.committed, stale_commits=self.stale_commits)

    async def _serve(self, stopping: Stopping) -> None:
        assert self.store is not None
        try:
            await retry_forever("register", self._beat_with_registration, stopping)
            self.health.serving = True
            log.info(
                "dispatcher started",
                workflows=[f"{w.name}@{w.version}" for w in self.held],
                tasks=sorted(self.registry.tasks),
                queues=self.queues,
                concurrency=self.concurrency,
            )
            heartbeat = asyncio.create_task(self._heartbeat_loop(stopping))
            hints = asyncio.create_task(self._cancel_hints(stopping))
            lost_claims = asyncio.create_task(self._lost_claims_loop(stopping))
            try:
                await self._claim_loop(stopping)
                self.health.serving = False
                await self._drain()
            finally:
                for loop_task in (heartbeat, hints, lost_claims):
                    loop_task.cancel()
                    with suppress(asyncio.CancelledError):
                        await loop_task
                await self._leave()
        finally:
            for run in self.cache.values():
                run.close()
            self.cache.clear()
            self.loop.close()

    async def _beat_with_registration(self) -> None:
        assert self.store is not None
        await self.store.check_shards()
        info = dumps(
            {
                "workflows": [f"{w.name}@{w.version}" for w in self.held],
                "tasks": sorted(self.registry.tasks),
                "queues": self.queues,
                "concurrency": self.concurrency,
            }
        )
        registrations: list[str] = []
        for w in self.held:
            entry = {"name": w.name, "version": w.version, "queue": w.queue, "schema": w.input_schema}
            registrations += [f"{w.name}@{w.version}", dumps(entry)]
        await self._beat(info, registrations)

    async def _beat(self, info: str = "", registrations: list[str] | None = None) -> None:
        assert self.store is not None
        timeout_ms = round(self.settings.heartbeat_timeout * 1000)
        pairs: list[str] = []
        for w in self.held:
            pairs += [w.name, w.version]
        await asyncio.gather(
            self.store.fleet_script("beat", self.worker_id, timeout_ms, info, *(registrations or [])),
            *(
                self.store.shard_script(
                    "beat_shard", s, self.worker_id, timeout_ms, len(self.held), *pairs, *self.ready_lists[s.tag]
                )
                for s in self.shards
            ),
        )
        self._last_beat = time.monotonic()

    async def _heartbeat_loop(self, stopping: Stopping) -> None:
        while not await stopping.sleep(self.settings.heartbeat_interval):
            try:
                await self._beat()
            except REDIS_ERRORS as exc:
                log.warning("heartbeat failed", error=str(exc))
            self.metrics.heartbeat_age.set(time.monotonic() - self._last_beat)

    async def _drain(self) -> None:
        """Let the work in flight finish, up to ``drain_timeout`` (including work handed off by commits that
        were already on their way when claiming stopped); cancel what is left, which ``leave`` hands back."""
        if not self.inflight:
            return
        log.info("draining", in_flight=len(self.inflight))
        deadline = time.monotonic() + self.drain_timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.wait(set(self.inflight), timeout=deadline - time.monotonic())
        pending = set(self.inflight)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning("drain timed out; unfinished work is handed back", handed_back=len(pending))

    async def _leave(self) -> None:
        """Hand back what is still held, stop being live for our versions, halt orphaned steps."""
        assert self.store is not None
        pairs: list[str] = []
        for w in self.held:
            pairs += [w.name, w.version]
        try:
            for shard in self.shards:
                await self.store.shard_script("leave", shard, self.worker_id, *pairs)
                await self.store.shard_script("sweep_versions", shard)
            await self.store.fleet_script("leave_fleet", self.worker_id)
        except REDIS_ERRORS as exc:
            log.warning("could not unregister; the reaper will recover held work", error=str(exc))

    # -- claiming -------------------------------------------------------------------------------------

    async def _claim_loop(self, stopping: Stopping) -> None:
        assert self.store is not None
        claiming = asyncio.Event()  # cleared when this loop ends: the waiters leave within WAKE_TIMEOUT
        claiming.set()
        self._accepting = True
        waiters = [asyncio.create_task(self._wake_waiter(shard, claiming)) for shard in self.shards]
        stop_watch = asyncio.create_task(self._wake_on_stop(stopping))
        delay = 0.05
        try:
            while not stopping.is_set:
                self.health.tick()
                self.metrics.in_flight.set(len(self.inflight))
                budget = 0 if self._exclusive else self._free_slots()
                if budget <= 0:
                    self.capacity.clear()
                    await self.capacity.wait()  # a slot frees up, or stopping (see _wake_on_stop)
                    continue
                self._woken.clear()
                self._reserved += budget  # hand-offs meanwhile must not take these slots too
                try:
                    claims, drained = await self._claim(budget)
                    delay = 0.05
                except Exception as exc:  # an outage, or a reply that cannot be decoded: back off, go on
                    log.warning("claim failed, retrying", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                    self._check_held.set()
                    await stopping.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                finally:
                    self._reserved -= budget
                    self.capacity.set()  # whatever was not claimed is free again (see _wake_waiter)
                if claims:
                    crash_point("after_claim")
                for claim in claims:
                    self._spawn(claim)
                if drained:  # every list gave less than asked: wait for a wake-up, no empty re-claim
                    await self._woken.wait()  # a wake-up token, or stopping (see _wake_on_stop)
        finally:
            stop_watch.cancel()
            # Blocking reads are not cancelled mid-command (redis-py may swallow that); they time out.
            self._accepting = False
            claiming.clear()
            _, late = await asyncio.wait(waiters, timeout=WAKE_TIMEOUT + 2)
            for waiter in late:
                waiter.cancel()

    async def _wake_on_stop(self, stopping: Stopping) -> None:
        """Wake the claim loop when stopping, wherever it waits (one waiter, not one per wait)."""
        await stopping.event.wait()
        self._woken.set()
        self.capacity.set()

    async def _claim(self, budget: int) -> tuple[list[list[Any]], bool]:
        """Claim up to ``budget`` items over the shards, each shard's lists in a rotating order.

        With at least one item per shard to ask for, every shard is asked at once (one pipelined round
        trip); with fewer, shards are asked one after the other until the budget is met, so that the
        dispatcher never holds more than its concurrency. Also says whether every shard gave less than it
        was asked: its lists were empty a moment ago, and anything queued since leaves a wake-up token, so
        the loop can block instead of claiming again.
        """
        assert self.store is not None
        budget = min(budget, CLAIM_BATCH)
        self._rotation += 1
        turn = self._rotation % len(self.shards)
        shards = self.shards[turn:] + self.shards[:turn]
        if budget >= len(shards):
            base, extra = divmod(budget, len(shards))
            shares = [base + (1 if i < extra else 0) for i in range(len(shards))]
            calls = [
                self.store.shard_script("claim", shard, self.worker_id, share, *self._rotated(shard))
                for shard, share in zip(shards, shares, strict=True)
            ]
            results = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)  # one: no task
            drained = all(len(claims) < share for claims, share in zip(results, shares, strict=True))
            return [claim for claims in results for claim in claims], drained
        taken: list[list[Any]] = []
        for shard in shards:
            taken += await self.store.shard_script(
                "claim", shard, self.worker_id, budget - len(taken), *self._rotated(shard)
            )
            if len(taken) >= budget:
                return taken, False
        return taken, True

    def _rotated(self, shard: ShardKeys) -> list[str]:
        """A shard's ready lists in a rotating order, so that no list starves the others."""
        lists = self.ready_lists[shard.tag]
        turn = self._rotation % len(lists)
        return lists[turn:] + lists[:turn]

    async def _wake_waiter(self, shard: ShardKeys, claiming: asyncio.Event) -> None:
        """Block on one shard's wake-up tokens and wake the claim loop (one blocked connection per shard)."""
        assert self.store is not None
        wake_lists = [shard.wake(lst) for lst in self.ready_lists[shard.tag]]
        while claiming.is_set():
            if self._exclusive or self._free_slots() <= 0:
                # Full: leave wake-up tokens to dispatchers that can claim, until a slot frees up.
                self.capacity.clear()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self.capacity.wait(), WAKE_TIMEOUT)
                continue
            try:
                if await self.store.redis.blpop(wake_lists, timeout=WAKE_TIMEOUT):
                    self._woken.set()
            except REDIS_ERRORS:
                await asyncio.sleep(0.5)
            self.health.tick()

    async def _lost_claims_loop(self, stopping: Stopping) -> None:
        """Now and then, and soon after a claim or commit failed, hand back lost claims (see below)."""
        every = self.settings.heartbeat_interval * LOST_CLAIM_CHECKS
        while True:
            await _first(self._check_held.wait(), stopping.event.wait(), asyncio.sleep(every))
            self._check_held.clear()
            if stopping.is_set:
                return
            try:
                await self._hand_back_lost_claims(stopping)
            except REDIS_ERRORS as exc:
                log.warning("could not check for lost claims", error=str(exc))
                self._check_held.set()
                await stopping.sleep(1.0)

    async def _hand_back_lost_claims(self, stopping: Stopping) -> None:
        """Hand back items our processing hash holds that we are not running.

        A script runs whole even when its reply is lost (the connection broke, Redis was killed right after
        an fsync): the claim then holds items this dispatcher never heard of, and since the dispatcher is
        alive, the reaper never recovers them. Claims whose replies were already on their way when the
        hash was read are given a grace period to arrive; the script hands back only an entry whose lease
        is unchanged, so a commit meanwhile wins, and a late reply loses to the new lease (fenced).
        """
        assert self.store is not None
        reads = [self.store.redis.hgetall(shard.processing(self.worker_id)) for shard in self.shards]
        snapshots: list[dict[str, str]] = list(await asyncio.gather(*reads))  # type: ignore[arg-type]
        if not any(snapshots) or await stopping.sleep(max(self.settings.heartbeat_interval, 1.0)):
            return
        for shard, held in zip(self.shards, snapshots, strict=True):
            lost = [value for item, lease in held.items() if self.holding.get(item) != lease for value in (item, lease)]
            if lost:
                handed = await self.store.shard_script("hand_back", shard, self.worker_id, *lost)
                if handed:
                    log.warning("handed back claims whose reply never reached this dispatcher", items=handed)

    def _spawn(self, claim: list[Any]) -> None:
        kind = claim[0]
        suspect = kind in ("W", "T")
        claim[0] = kind.lower()
        if claim[0] == "w":
            coroutine, item, lease = self._run_step(claim), f"w|{claim[1]}", str(claim[2])
        else:
            coroutine, item, lease = self._run_task(claim), f"t|{claim[1]}|{claim[2]}", str(claim[3])
        if suspect:  # a dispatcher died holding it with other work: run it alone, so a crash is its own
            self._exclusive = True
            coroutine = self._alone(coroutine)
        self.holding[item] = lease
        task = asyncio.create_task(coroutine, context=self._context.copy())
        self.inflight.add(task)
        task.add_done_callback(functools.partial(self._done, item, lease))

    async def _alone(self, work: Coroutine[Any, Any, None]) -> None:
        """Wait until nothing else is in flight, run ``work``, then let claiming resume.

        Items can still arrive meanwhile (handed off by commits that were on their way), so this waits
        until none is left rather than for the ones in flight when it began.
        """
        try:
            current = asyncio.current_task()
            while others := [task for task in self.inflight if task is not current]:
                await asyncio.wait(others)
            await work
        finally:
            work.close()  # no-op when it ran; frees it when the wait was cancelled
            self._exclusive = False
            self.capacity.set()

    def _done(self, item: str, lease: str, task: asyncio.Task[None]) -> None:
        if self.holding.get(item) == lease:
            del self.holding[item]
        self.inflight.discard(task)
        self.capacity.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("work item crashed", error=repr(task.exception()))

    # -- workflow steps -------------------------------------------------------------------------------

    async def _run_step(self, claim: list[Any]) -> None:
        _, workflow_id, lease, name, version, _status, input_text, start, committed_len, *rest = claim
        start, committed_len = int(start), int(committed_len)
        split = rest.index("|")
        entries, call_fields = rest[:split], rest[split + 1 :]
        began = time.perf_counter()
        with structlog.contextvars.bound_contextvars(workflow_id=workflow_id, name=name, version=version):
            if committed_len < 0:
                self.metrics.child(self.metrics.workflows_started, name).inc()
            definition = self.registry.workflow(name, version)
            if definition is None:  # cannot happen through version routing; never guess
                log.error("claimed a step of a version this dispatcher does not hold")
                return
            run = self.cache.pop(workflow_id, None)
            if run is not None and (start < 0 or run.delivered != start):
                run.close()  # our copy is not the latest committed state: rebuild
                run = None
            if run is None and start >= 0:
                entries, call_fields = await self._load_history(workflow_id)
            try:
                if run is None:
                    run = self._rebuild(definition, workflow_id, input_text, call_fields, committed_len)
                run.feed(entries)
                step = run.take_step()
                payload, based_on = step_payload(step), run.delivered
            except Exception as exc:
                # Corrupt history (or an engine bug): fail this workflow with a clear error rather than
                # leaving it held and RUNNING forever; the others run on.
                log.exception("cannot replay the workflow's history: failing it")
                if run is not None:
                    run.close()
                run, step = None, None
                payload, based_on = corrupt_history_payload(exc), len(entries) if start < 0 else start
            retention_ms = round(self.settings.retention * 1000)
            result = await self._commit("commit_step", workflow_id, lease, based_on, payload, retention_ms)
            if run is not None:
                if result == "ok":
                    self._remember(workflow_id, run)
                else:
                    run.close()
            if result != "stale":
                self.metrics.child(self.metrics.steps, name).inc()
                self.metrics.child(self.metrics.step_duration, name).observe(time.perf_counter() - began)
            if result == "finished":
                status = step.outcome.status if step is not None and step.outcome is not None else "FAILED"
                self.metrics.child(self.metrics.workflows_finished, name, status).inc()
                log.info("workflow finished", status=status)

    def _rebuild(
        self, definition: Any, workflow_id: str, input_text: str, call_fields: list[str], committed_len: int
    ) -> WorkflowRun:
        """A run replayed from the recorded call records (when no cached copy is current)."""
        recorded = {
            int(call_fields[i]): loads(call_fields[i + 1])
            for i in range(0, len(call_fields), 2)
            if call_fields[i].isdigit()
        }
        if any(not isinstance(record, dict) for record in recorded.values()):
            raise ValueError("a call record is not a JSON object")
        run = WorkflowRun(
            loop=self.loop,
            definition=definition,
            workflow_id=workflow_id,
            input_value=loads(input_text),
            recorded=recorded,
            committed_len=committed_len,
            max_payload=self.settings.max_payload,
            shard_of=self.keys.shard_of,
        )
        run.start()
        return run

    async def _load_history(self, workflow_id: str) -> tuple[list[str], list[str]]:
        """Read a workflow's whole inbox and call records (when our cached copy is gone)."""
        assert self.store is not None
        shard = self.keys.for_workflow(workflow_id)
        delay = 0.05
        while True:  # through outages: the claimed step stays ours (leased) until we commit it
            try:
                async with self.store.redis.pipeline(transaction=False) as pipe:
                    pipe.lrange(shard.inbox(workflow_id), 0, -1)
                    pipe.hgetall(shard.calls(workflow_id))
                    inbox, calls = await pipe.execute()
                break
            except REDIS_ERRORS as exc:
                log.warning("reading history failed, retrying", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        flat: list[str] = []
        for key, value in calls.items():
            flat += [key, value]
        return list(inbox), flat

    def _remember(self, workflow_id: str, run: WorkflowRun) -> None:
        self.cache[workflow_id] = run
        while len(self.cache) > self.cache_size:
            _, evicted = self.cache.popitem(last=False)
            evicted.close()

    # -- tasks ----------------------------------------------------------------------------------------

    async def _cancel_hints(self, stopping: Stopping) -> None:
        """Stop running tasks whose call was released (workflow cancelled or ended); results are discarded."""
        assert self.store is not None
        channel = f"{{{self.settings.prefix}}}:cancel"
        while not stopping.is_set:
            pubsub = self.store.redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                while not stopping.is_set:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        running = self.running_tasks.get(str(message["data"]))
                        if running is not None:
                            self.released.add(str(message["data"]))
                            log.info("cancelling a running task: its call was released", item=message["data"])
                            running.cancel()
            except REDIS_ERRORS:
                await stopping.sleep(0.5)
            finally:
                with suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _run_task(self, claim: list[Any]) -> None:
        _, workflow_id, seq, lease, *flat = claim
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        name = fields.get("name", "")
        attempt = int(fields.get("attempt", "1"))
        max_attempts = int(fields.get("max_attempts", "1"))
        key = f"{workflow_id}|{seq}"
        with structlog.contextvars.bound_contextvars(workflow_id=workflow_id, task=name, attempt=attempt):
            began = time.perf_counter()
            handler = asyncio.current_task()
            assert handler is not None
            self.running_tasks[key] = handler
            try:
                outcome, payload, delay_ms = await run_attempt(
                    self.registry.task(name), fields, attempt, max_attempts, seq, self.settings.max_payload
                )
            except asyncio.CancelledError:
                if key not in self.released:
                    raise  # this handler itself is being cancelled (drain timeout): the work is handed back
                handler.uncancel()  # a cancel hint stopped the task: its call was released; report and go on
                outcome, payload, delay_ms = "fail", dumps({"type": "CancelledError", "message": "released"}), 0
            finally:
                self.running_tasks.pop(key, None)
                self.released.discard(key)
            self.metrics.child(self.metrics.task_duration, name).observe(time.perf_counter() - began)
            self.metrics.child(self.metrics.task_attempts, name, outcome).inc()
            if outcome != "ok":
                log.warning("task attempt failed", outcome=outcome, error=loads(payload).get("message"))
            result = await self._commit("commit_task", workflow_id, seq, lease, outcome, payload, delay_ms)
            if result == "dead":
                self.metrics.child(self.metrics.dead_lettered, name).inc()
                log.error("task dead-lettered", task=name, attempts=attempt)

    # -- committing -----------------------------------------------------------------------------------

    def _handoff_budget(self) -> int:
        """How many items a commit may claim for this dispatcher: the slot its own item frees, plus any
        free capacity not promised to another claim. None while a suspect runs alone or while draining."""
        if not self._accepting or self._exclusive:
            return 0
        return 1 + max(0, min(self._free_slots(), CLAIM_BATCH - 1))

    def _free_slots(self) -> int:
        """Slots neither running an item nor promised to a claim or hand-off in flight."""
        return self.concurrency - len(self.inflight) - self._reserved

    async def _commit(self, script: str, workflow_id: str, *args: Any) -> str:
        """Commit through Redis outages: retried until it lands or the lease is known lost.

        The work handed off by the commit (see ``hand_off`` in lib.lua) is started here; it begins running
        once the caller next yields, after the caller's own bookkeeping (such as caching its run).
        """
        assert self.store is not None
        crash_point("before_commit")
        budget = self._handoff_budget()
        self._reserved += max(0, budget - 1)
        delay = 0.05
        try:
            while True:
                try:
                    result = await self.store.shard_script(
                        script, self.keys.for_workflow(workflow_id), self.worker_id, workflow_id, *args, budget
                    )
                    crash_point("after_commit")
                    break
                except REDIS_ERRORS as exc:
                    log.warning("commit failed, retrying", error=str(exc), retry_in=delay)
                    self._check_held.set()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            if budget > 1:
                self._reserved -= budget - 1
                self.capacity.set()
        status = str(result[0])
        if status in ("ok", "finished", "dead") and result[1]:
            self.metrics.handoffs.inc(len(result[1]))
            for claim in result[1]:
                self._spawn(claim)
        if status == "stale":
            self.stale_commits += 1
            self.metrics.stale_commits.inc()
            log.warning("commit rejected: the lease was lost to another dispatcher", script=script)
        else:
            self.committed += 1
        return status


async def _first(*awaitables: Any) -> None:
    """Wait until the first of several awaitables completes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
