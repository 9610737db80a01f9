"""The claim loop: take ready work in batches while there is room, and sleep on wake-up tokens when there is
none to take.

One blocked connection per shard waits on the wake-up tokens of the dispatcher's ready queues (BLPOP) and
wakes the loop; while the loop is idle, a claim rides behind that BLPOP in the same pipeline, so Redis runs it
as soon as a token arrives. A full dispatcher leaves tokens to dispatchers that can claim. Claims over several shards go
out at once when the budget gives each shard at least one item, else shard by shard, so the dispatcher never
holds more than its concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from bdurable.keys import ShardKeys
from bdurable.runtime.faults import crash_point
from bdurable.runtime.health import Health
from bdurable.runtime.metrics import Metrics
from bdurable.runtime.service import Backoff, Stopping
from bdurable.services.dispatcher.slots import SlotLimiter
from bdurable.store import REDIS_ERRORS, ReadyQueue, Store
from bdurable.wire import Claim

__all__ = ["ClaimLoop"]

log = structlog.get_logger("bdurable.dispatcher")

WAKE_TIMEOUT = 1.0
LIVENESS_TICK = 1.0  # a loop that waits (for a slot, for work) still shows it responds this often (/livez)


class ClaimLoop:
    def __init__(
        self,
        *,
        worker_id: str,
        store: Store,
        shards: list[ShardKeys],
        queues: dict[str, list[ReadyQueue]],
        slots: SlotLimiter,
        spawn: Callable[[Claim], None],
        metrics: Metrics,
        health: Health,
        check_held: asyncio.Event,
    ) -> None:
        self.worker_id = worker_id
        self.store = store
        self.shards = shards
        self.queues = queues  # per shard tag: the ready queues this dispatcher listens to
        self.slots = slots
        self.spawn = spawn
        self.metrics = metrics
        self.health = health
        self.check_held = check_held
        self._rotation = 0
        self._woken = asyncio.Event()
        self._idle = False  # the loop found every queue empty and waits for a wake-up

    async def run(self, stopping: Stopping) -> None:
        claiming = asyncio.Event()  # cleared when this loop ends: the waiters leave within WAKE_TIMEOUT
        claiming.set()
        self.slots.accepting = True
        waiters = [asyncio.create_task(self._wake_waiter(shard, claiming)) for shard in self.shards]
        stop_watch = asyncio.create_task(self._wake_on_stop(stopping))
        backoff = Backoff(self.health, stopping)
        try:
            while not stopping.is_set:
                self.health.tick()
                self.metrics.in_flight.set(self.slots.running)
                budget = min(self.slots.free(), self.slots.batch)
                if budget <= 0:
                    # Every slot busy (tasks may run for minutes): wait for one, alive all along.
                    while not await self.slots.wait_for_room(LIVENESS_TICK) and not stopping.is_set:
                        self.health.tick()
                    continue
                self._woken.clear()
                self.slots.reserve(budget)  # hand-offs meanwhile must not take these slots too
                try:
                    claims, drained = await self._claim(budget)
                    backoff.reset()
                except Exception as exc:  # an outage, or a reply that cannot be decoded: back off, go on
                    error = f"{type(exc).__name__}: {exc}"
                    log.warning("claim failed, retrying", error=error, retry_in=backoff.delay)
                    self.check_held.set()
                    await backoff.wait()
                    continue
                finally:
                    self.slots.release(budget)  # whatever was not claimed is free again
                if claims:
                    crash_point("after_claim")
                for claim in claims:
                    self.spawn(claim)
                if drained:  # every queue gave less than asked: wait for a wake-up, no empty re-claim
                    self._idle = True  # meanwhile the wake-up waiters claim what wakes them (_wake_waiter)
                    try:
                        while not await _wait(self._woken, LIVENESS_TICK):  # a token, or stopping (_wake_on_stop)
                            self.health.tick()
                    finally:
                        self._idle = False
        finally:
            stop_watch.cancel()
            # Blocking reads are not cancelled mid-command (redis-py may swallow that); they time out.
            self.slots.accepting = False
            claiming.clear()
            _, late = await asyncio.wait(waiters, timeout=WAKE_TIMEOUT + 2)
            for waiter in late:
                waiter.cancel()

    async def _wake_on_stop(self, stopping: Stopping) -> None:
        """Wake the claim loop when stopping, wherever it waits (one waiter, not one per wait)."""
        await stopping.event.wait()
        self._woken.set()
        self.slots.wake()

    async def _claim(self, budget: int) -> tuple[list[Claim], bool]:
        """Claim up to ``budget`` items over the shards, starting from a rotating shard.

        With at least one item per shard to ask for, every shard is asked at once (one pipelined round trip);
        with fewer, shards are asked one after the other until the budget is met. Also says whether every
        shard gave less than it was asked: its queues were empty a moment ago, and anything queued since
        leaves a wake-up token, so the loop can block instead of claiming again.
        """
        self._rotation += 1
        turn = self._rotation % len(self.shards)
        shards = self.shards[turn:] + self.shards[:turn]
        if budget >= len(shards):
            base, extra = divmod(budget, len(shards))
            shares = [base + (1 if i < extra else 0) for i in range(len(shards))]
            calls = [
                self.store.claim(shard, self.worker_id, share, self.queues[shard.tag])
                for shard, share in zip(shards, shares, strict=True)
            ]
            results: list[list[Claim]] = [await calls[0]] if len(calls) == 1 else list(await asyncio.gather(*calls))
            drained = all(len(claims) < share for claims, share in zip(results, shares, strict=True))
            return [claim for claims in results for claim in claims], drained
        taken: list[Claim] = []
        for shard in shards:
            taken += await self.store.claim(shard, self.worker_id, budget - len(taken), self.queues[shard.tag])
            if len(taken) >= budget:
                return taken, False
        return taken, True

    async def _wake_waiter(self, shard: ShardKeys, claiming: asyncio.Event) -> None:
        """Block on one shard's wake-up tokens and wake the claim loop (one blocked connection per shard).

        While the claim loop is idle, the waiter claims too: the claim is pipelined behind the blocking read, so
        Redis runs it the moment a token arrives (one hop less for the first step of a quiet system's
        workflow). Its budget is reserved meanwhile, like any claim's; the claim loop is woken only if the
        claim took all it asked for (more may wait).
        """
        queues = self.queues[shard.tag]
        tokens: list[Any] = [shard.wake(queue.continuations) for queue in queues]
        while claiming.is_set():
            free = self.slots.free()
            if free <= 0:
                # Full: leave wake-up tokens to dispatchers that can claim, until a slot frees up.
                await self.slots.wait_for_room(WAKE_TIMEOUT)
                self.health.tick()
                continue
            # A share of the free slots, rounded down: the waiters of other shards always find some left (with
            # fewer free slots than shards, a waiter only wakes the claim loop); one shard's waiter takes all.
            budget = min(free // len(self.shards), self.slots.batch) if self._idle else 0
            try:
                if budget:
                    await self._claim_when_woken(shard, queues, budget)
                elif await self.store.redis.blpop(tokens, timeout=WAKE_TIMEOUT):
                    self._woken.set()
            except Exception as exc:  # an outage, or a reply that cannot be decoded: its claims may be lost
                if not isinstance(exc, REDIS_ERRORS):  # an outage: the claim loop says so
                    log.warning("claim failed, retrying", error=f"{type(exc).__name__}: {exc}", retry_in=0.5)
                self.check_held.set()
                await asyncio.sleep(0.5)
            self.health.tick()

    async def _claim_when_woken(self, shard: ShardKeys, queues: list[ReadyQueue], budget: int) -> None:
        self.slots.reserve(budget)
        try:
            woken, claims = await self.store.claim_when_woken(shard, self.worker_id, budget, queues, WAKE_TIMEOUT)
        finally:
            self.slots.release(budget)
        if claims:
            crash_point("after_claim")
        if claims and (not self.slots.accepting or self.slots.exclusive):
            # The claim ran after this dispatcher stopped taking work (it drains, or a suspect runs alone):
            # put it back at once for others (if this fails, leaving or the reaper puts it back).
            await self.store.hand_back(shard, self.worker_id, {claim.item.encode(): claim.lease for claim in claims})
            return
        for claim in claims:
            self.spawn(claim)
        if woken and len(claims) >= budget:
            self._woken.set()


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` up to ``timeout``; returns whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()
