"""Lost claims: items this dispatcher's processing hash holds but it is not running.

A script runs whole even when its reply is lost (the connection broke, Redis was killed right after an fsync):
a claim then holds items this dispatcher never heard of, and since the dispatcher is alive, the reaper never
recovers them. Now and then, and soon after a failed claim or commit, the dispatcher reads its processing
hashes, waits a grace period (replies already on their way arrive meanwhile), and hands back whatever it is
not running; the script hands back only an entry whose lease is unchanged, so a commit meanwhile wins, and a
reply arriving even later loses to the new lease (fenced like any stale claim).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog

from bdurable.keys import ShardKeys
from bdurable.reads import Reads
from bdurable.runtime.service import Stopping
from bdurable.store import REDIS_ERRORS, Store

__all__ = ["LostClaims"]

log = structlog.get_logger("bdurable.dispatcher")

CHECK_EVERY = 25  # heartbeat intervals between two checks when nothing failed


class LostClaims:
    def __init__(
        self,
        *,
        worker_id: str,
        store: Store,
        reads: Reads,
        shards: list[ShardKeys],
        holding: Mapping[str, str],
        heartbeat_interval: float,
        check_now: asyncio.Event,
    ) -> None:
        self.worker_id = worker_id
        self.store = store
        self.reads = reads
        self.shards = shards
        self.holding = holding  # item -> lease of what this dispatcher runs (the work pool's view)
        self.heartbeat_interval = heartbeat_interval
        self.check_now = check_now

    async def run(self, stopping: Stopping) -> None:
        every = self.heartbeat_interval * CHECK_EVERY
        while True:
            waits = [asyncio.ensure_future(self.check_now.wait()), asyncio.ensure_future(stopping.event.wait())]
            await asyncio.wait(waits, timeout=every, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            self.check_now.clear()
            if stopping.is_set:
                return
            try:
                await self.hand_back(stopping)
            except REDIS_ERRORS as exc:
                log.warning("could not check for lost claims", error=str(exc))
                self.check_now.set()
                await stopping.sleep(1.0)

    async def hand_back(self, stopping: Stopping) -> None:
        """Hand back what our processing hashes hold that we are not running (after a grace period)."""
        snapshots = await asyncio.gather(*(self.reads.processing(shard, self.worker_id) for shard in self.shards))
        if not any(snapshots) or await stopping.sleep(max(self.heartbeat_interval, 1.0)):
            return
        for shard, held in zip(self.shards, snapshots, strict=True):
            lost = {item: lease for item, lease in held.items() if self.holding.get(item) != lease}
            if lost:
                handed = await self.store.hand_back(shard, self.worker_id, lost)
                if handed:
                    log.warning("handed back claims whose reply never reached this dispatcher", items=handed)
