"""Where a single-task workflow's idle start-to-result time goes: ``python bench/bench_latency_chain.py``.

The latency figure of ``bench/run.py`` is one number; this splits it into the hops of the chain, so that the
limit it meets can be read off rather than guessed. A dispatcher and a scheduler run as processes of their own
(as in production: ``bdurable.Worker``, one role each); in the dispatcher's process the store's claim and commit
calls are wrapped to note the wall-clock time (``time.time``, one clock for every process of this machine) when
a claim arrives and each commit is sent and answered, and the workflow's task notes when its code runs
(``chain_app``, ``bench_app.one_task``'s shape). The client starts one workflow at a time on an otherwise idle
system and notes when ``start`` returned and when ``result`` did; Redis's slow log times every script call.
Each segment is the median over the workflows.

Only the benchmark wraps those calls (in its own dispatcher process); nothing of this runs in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chain_app
from harness import redis

from bdurable import Client, Settings, Worker

# (mark, what happened up to it); the segments are the times between consecutive marks.
MARKS = (
    ("claimed", "the dispatcher holds the claim: the start's script, the wake-up and the claim behind it"),
    ("step_commit_sent", "the claim decoded and spawned, the wake-up read sent again, the step run up to its call"),
    ("step_committed", "the step's commit: a round trip (its reply hands the task to this dispatcher)"),
    ("attempt_began", "the handed-off task claim spawned, its attempt begun"),
    ("task_commit_sent", "the task's code, the final step run on the cached run, the commit document"),
    ("task_committed", "the task's commit, with the final step: a round trip"),
    ("result", "the published result reaches the client, result() returns"),
)


def _traced_dispatcher(settings: Settings, marks_path: str) -> None:
    """A dispatcher process whose store notes when claims arrive and commits go and come (see the module doc)."""
    from bdurable.store import Store

    noted = chain_app.NOTED

    def wrap(attribute: str, before: str | None, after: str) -> None:
        original: Callable[..., Awaitable[Any]] = getattr(Store, attribute)

        async def traced(*args: Any, **kwargs: Any) -> Any:
            if before:
                noted.append((before, time.time()))
            reply = await original(*args, **kwargs)
            claimed = reply[1] if isinstance(reply, tuple) else reply  # claim_when_woken: (woken, claims)
            if after != "claimed" or claimed:
                noted.append((after, time.time()))
            return reply

        setattr(Store, attribute, traced)

    wrap("claim_when_woken", None, "claimed")
    wrap("claim", None, "claimed")
    wrap("commit_step", "step_commit_sent", "step_committed")
    wrap("commit_task", "task_commit_sent", "task_committed")

    async def serve() -> None:
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        async with Worker([chain_app], settings=settings, roles=("dispatcher",)):
            await stopping.wait()

    try:
        asyncio.run(serve())
    finally:
        Path(marks_path).write_text(json.dumps(noted))


def _scheduler(settings: Settings) -> None:
    async def serve() -> None:
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        async with Worker([chain_app], settings=settings, roles=("scheduler",)):
            await stopping.wait()

    asyncio.run(serve())


async def _registered(client: Client, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while await client.store.redis.zcard(client.keys.shard(0).live(name)) < 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the dispatcher did not register {name} within {timeout}s")
        await asyncio.sleep(0.05)


async def _drive(settings: Settings, count: int) -> tuple[list[tuple[float, float, float]], dict[str, float]]:
    """Start-to-result of ``count`` workflows, one at a time: (called, start returned, result returned); and
    per script, the median time Redis took to run it (its slow log, every command logged meanwhile)."""
    runs: list[tuple[float, float, float]] = []
    async with Client(settings=settings) as client:
        await _registered(client, "chain_one_task")
        redis_ = client.store.redis
        for i in range(count + 10):  # the first ten warm up
            if i == 10:
                await redis_.config_set("slowlog-max-len", str(20 * count))
                await redis_.config_set("slowlog-log-slower-than", "0")
                await redis_.slowlog_reset()
            await asyncio.sleep(0.01 + 0.002 * (i % 5))  # idle in between, its phase varied
            called = time.time()
            handle = await client.start(chain_app.chain_one_task, i)
            started = time.time()
            await handle.result(timeout=10)
            runs.append((called, started, time.time()))
        await redis_.config_set("slowlog-log-slower-than", "10000")
        logged = await redis_.slowlog_get(20 * count)
    by_script: dict[str, list[float]] = {}
    for entry in logged:
        command = [part.decode() if isinstance(part, bytes) else str(part) for part in entry["command"].split()]
        if command and command[0].upper() == "FCALL" and len(command) > 1:
            by_script.setdefault(command[1].split("_", 2)[-1], []).append(entry["duration"] / 1000)
    return runs[10:], {name: statistics.median(times) for name, times in sorted(by_script.items())}


def _segments(runs: list[tuple[float, float, float]], noted: list[tuple[str, float]]) -> dict[str, list[float]]:
    """Per mark: the ms since the previous mark, for every workflow whose marks all came in order."""
    names = [name for name, _ in MARKS]
    segments: dict[str, list[float]] = {name: [] for name in ["start_returned", *names]}
    for called, started, finished in runs:
        inside = [(name, at) for name, at in noted if called <= at <= finished]
        firsts: dict[str, float] = {}
        for name, at in inside:
            firsts.setdefault(name, at)
        firsts["result"] = finished
        times = [called] + [firsts.get(name, float("nan")) for name in names]
        if any(math.isnan(at) for at in times) or any(later < earlier for earlier, later in pairwise(times)):
            continue  # a mark missing or out of order (a claim by the claim loop, a hand-off elsewhere): skipped
        segments["start_returned"].append((started - called) * 1000)
        for name, earlier, later in zip(names, times[:-1], times[1:], strict=True):
            segments[name].append((later - earlier) * 1000)
    return segments


def main(count: int) -> None:
    context = multiprocessing.get_context("spawn")
    with redis() as server, tempfile.TemporaryDirectory() as folder:
        settings = Settings(redis_url=server.url, prefix=f"c{uuid.uuid4().hex[:8]}")
        marks_path = os.path.join(folder, "marks.json")
        processes = [
            context.Process(target=_traced_dispatcher, args=(settings, marks_path)),
            context.Process(target=_scheduler, args=(settings,)),
        ]
        for process in processes:
            process.start()
        try:
            runs, scripts = asyncio.run(_drive(settings, count))
        finally:
            for process in processes:
                if process.pid is not None and process.is_alive():
                    os.kill(process.pid, signal.SIGTERM)
            for process in processes:
                process.join(30)
                if process.is_alive():
                    process.kill()
        noted = [(name, at) for name, at in json.loads(Path(marks_path).read_text())]
    segments = _segments(runs, noted)
    kept = len(segments["result"])
    total = [(finished - called) * 1000 for called, _, finished in runs]
    print(f"\n{count} single-task workflows, one at a time on an idle system; {kept} with every mark in order\n")
    print(f"{'ms (median)':>12}  segment")
    for name, what in MARKS:
        print(f"{statistics.median(segments[name]):>12.3f}  {name}: {what}")
    median_sum = sum(statistics.median(segments[name]) for name, _ in MARKS)
    print(f"{median_sum:>12.3f}  sum of the medians")
    print(f"{statistics.median(total):>12.3f}  start-to-result, median of every workflow")
    print(f"{statistics.median(segments['start_returned']):>12.3f}  (start() returned, meanwhile: not on the chain)")
    print("\ninside Redis, per script call (median ms, its slow log):", end="")
    print("".join(f" {name} {ms:.3f};" for name, ms in scripts.items()).rstrip(";"))
    round_trips = ("step_committed", "task_committed")
    python = ("step_commit_sent", "attempt_began", "task_commit_sent")
    print(
        f"\ndispatcher Python on the chain: {sum(statistics.median(segments[n]) for n in python):.3f} ms; "
        f"its two commits' round trips: {sum(statistics.median(segments[n]) for n in round_trips):.3f} ms; "
        f"the client's start up to the claim and the result's way back: "
        f"{statistics.median(segments['claimed']) + statistics.median(segments['result']):.3f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="workflows measured (after ten to warm up)")
    main(parser.parse_args().count)
