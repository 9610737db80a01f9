"""Start throughput from one client process: ``python bench/bench_starts.py`` prints workflows started per
second one by one (``await client.start(...)`` in a loop: one round trip each) and batched
(``client.start_many``: pipelined, a few round trips for thousands), against a local Redis (AOF ``everysec``).
No dispatcher runs: this is the client's and Redis's side only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_app
from harness import node_clients, redis, settle

from bdurable import Client, Settings


async def one_by_one(client: Client, count: int) -> float:
    began = time.perf_counter()
    for n in range(count):
        await client.start(bench_app.one_task, n)
    return count / (time.perf_counter() - began)


async def batched(client: Client, count: int) -> float:
    began = time.perf_counter()
    await client.start_many(bench_app.one_task, list(range(count)))
    return count / (time.perf_counter() - began)


async def measure(url: str, count: int, repeat: int) -> dict[str, float]:
    """Starts per second, one by one and with ``start_many`` (the median of ``repeat`` interleaved rounds), each
    on a fresh client after one warm-up start (its connection made, the function library checked)."""
    rows: dict[str, list[float]] = {"one by one": [], "start_many": []}
    nodes = node_clients([url])
    for _ in range(repeat):
        for name, measure_one in (("one by one", one_by_one), ("start_many", batched)):
            settings = Settings(redis_url=url, prefix=f"s{uuid.uuid4().hex[:8]}")
            async with Client(settings=settings) as client:
                await client.start(bench_app.one_task, -1)  # warm: connected, the library loaded, for both
                await settle(nodes)  # no AOF rewrite (a fork) lands in the measure
                rows[name].append(await measure_one(client, count))
    for node in nodes:
        await node.aclose()
    return {name: sorted(values)[len(values) // 2] for name, values in rows.items()}


async def main(count: int, repeat: int, as_json: bool) -> None:
    with redis() as server:
        best = await measure(server.url, count, repeat)
    if as_json:  # for bench/run.py, which runs this in a process of its own
        print(json.dumps(best))
        return
    print(f"\n{count} single-task workflows started from one client, median of {repeat}\n")
    print(f"{'how':<12}{'starts/s':>12}")
    for name, value in best.items():
        print(f"{name:<12}{value:>12,.0f}")
    print(f"\nstart_many: {best['start_many'] / best['one by one']:.1f}x one by one (target: >= 10x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args()
    asyncio.run(main(args.count, args.repeat, args.json))
