"""A dispatcher's memory with its run cache full: ``python bench/bench_memory.py`` prints the resident memory
(RSS) of one ``bdurable dispatcher`` process holding 10,000 workflow runs in its cache between steps, with small
payloads and with 100 KiB payloads, next to the payload bytes the cache counts (``BDURABLE_RUN_CACHE_BYTES``).

Each run makes one task call with its payload as input and argument, then waits for an event, so it stays in
the cache. The ratio RSS / counted bytes is what sizes the dispatcher's memory limit (docs/deploy.md "Sizing").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_app  # noqa: E402
from harness import redis  # noqa: E402

from bdurable import Client, Settings, Status  # noqa: E402
from bdurable.embedded import free_port  # noqa: E402


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def measure(url: str, runs: int, payload_bytes: int) -> dict[str, float]:
    settings = Settings(redis_url=url, prefix=f"m{uuid.uuid4().hex[:8]}")
    env = {**os.environ, "BDURABLE_REDIS_URL": url, "BDURABLE_PREFIX": settings.prefix, "PYTHONPATH": str(BENCH),
           "BDURABLE_LOG_LEVEL": "warning", "BDURABLE_RUN_CACHE_BYTES": "8GiB",
           "BDURABLE_METRICS_HOST": "127.0.0.1"}  # fmt: skip
    port = free_port()
    dispatcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bdurable.cli", "dispatcher", "--app", "bench_app", "--concurrency", "200",
        "--metrics-port", str(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with Client(settings=settings) as client:
            await until(lambda: client.reads.registered_versions("held_open"))
            await asyncio.sleep(1)
            idle = rss_mib(dispatcher.pid)
            payload = "x" * payload_bytes
            for first in range(0, runs, 1000):
                await client.start_many(bench_app.held_open, [payload] * min(1000, runs - first))
            await until(lambda: _all_waiting(client, runs))
            await asyncio.sleep(1)
            full = rss_mib(dispatcher.pid)
            counted = await asyncio.to_thread(_cache_bytes, port)
    finally:
        dispatcher.terminate()
        await dispatcher.wait()
    return {"idle": idle, "full": full, "counted": counted / 2**20}


async def _all_waiting(client: Client, runs: int) -> bool:
    return (await client.reads.counts())[Status.AWAITING_EVENT] >= runs


async def until(check: Callable[[], Awaitable[Any]]) -> None:
    """Poll another process's progress."""
    for _ in range(6000):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("no progress in 10 minutes")


def _cache_bytes(port: int) -> float:
    """The dispatcher's own count (``bdurable_run_cache_bytes`` on its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("bdurable_run_cache_bytes "):
                return float(line.split()[1])
    return float("nan")


async def measure_payloads(runs: int) -> list[tuple[int, dict[str, float]]]:
    """RSS with ``runs`` runs cached, for small (100 B) and large (100 KiB) payloads, each on a fresh Redis."""
    rows = []
    with redis(appendfsync="no") as server:
        for payload in (100, 100 * 1024):
            rows.append((payload, await measure(server.url, runs, payload)))
    return rows


async def main(runs: int) -> None:
    rows = await measure_payloads(runs)
    print(f"\none dispatcher, {runs:,} workflow runs cached\n")
    print(f"{'payload':>10}{'idle RSS':>12}{'full RSS':>12}{'per run':>12}{'counted':>12}{'RSS/counted':>13}")
    for payload, f in rows:
        per_run = (f["full"] - f["idle"]) * 1024 / runs
        ratio = (f["full"] - f["idle"]) / f["counted"]
        print(
            f"{payload:>9,}B{f['idle']:>10.0f}Mi{f['full']:>10.0f}Mi{per_run:>10.1f}Ki{f['counted']:>10.0f}Mi{ratio:>13.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(args.runs))
