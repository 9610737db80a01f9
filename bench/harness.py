"""Start a Redis and role processes for a benchmark, count Redis commands, time things."""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bdurable import Settings
from bdurable.embedded import RedisServer

BENCH = Path(__file__).parent


def _run_role(role: str, settings: Settings, options: dict[str, Any]) -> None:
    sys.path.insert(0, str(BENCH))
    from bdurable.registry import Registry
    from bdurable.runtime.service import run_until_signalled

    if role == "dispatcher":
        import bench_app

        from bdurable.services.dispatcher import Dispatcher

        instance: Any = Dispatcher(settings, Registry.from_modules([bench_app]), **options)
    elif role == "scheduler":
        from bdurable.services.scheduler import Scheduler

        instance = Scheduler(settings)
    else:
        from bdurable.services.signal_bus import SignalBus

        instance = SignalBus(settings)
    asyncio.run(run_until_signalled(instance.run))


@contextmanager
def redis(appendfsync: str = "everysec") -> Iterator[RedisServer]:
    with RedisServer(appendfsync=appendfsync) as server:
        yield server


@contextmanager
def roles(settings: Settings, *names: str, **options: Any) -> Iterator[list[Any]]:
    context = multiprocessing.get_context("spawn")
    processes = []
    for name in names:
        process = context.Process(target=_run_role, args=(name, settings, options if name == "dispatcher" else {}))
        process.start()
        processes.append(process)
    try:
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()


TOP_LEVEL = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_blpop", "cmdstat_blmove")


async def command_count(redis: Any) -> int:
    """Commands the roles sent to Redis so far, from INFO commandstats.

    Redis counts the commands a script runs under their own names, so only commands that scripts never
    issue are summed: script calls (every claim, commit, timer firing) and blocking waits. An upper bound
    on round trips: pipelined commands share one.
    """
    stats = await redis.info("commandstats")
    return sum(int(stats[name]["calls"]) for name in TOP_LEVEL if name in stats)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
