"""b-durable benchmarks: ``python bench/run.py`` prints a table of figures and ratios to the limit.

Every figure comes from one run on this machine against a local redis-server with AOF ``everysec``;
none is a timed test. Roles run as separate processes, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 1)[0])

from harness import Timer, command_count, percentile, redis, roles

from bdurable import Client, Settings


async def drain(settings: Settings, workflow: str, count: int, concurrency: int) -> dict[str, float]:
    """Queue ``count`` workflows with no dispatcher running, then time one dispatcher draining them."""
    async with Client(settings=settings) as client:
        # Register the bench app's workflows (a dispatcher must have been seen once to start by name).
        with roles(settings, "dispatcher", concurrency=concurrency):
            await _wait_registered(client, workflow)
        ids = [f"{workflow}-{i}" for i in range(count)]
        for chunk in range(0, count, 500):
            await asyncio.gather(
                *(client.start(workflow, i, workflow_id=ids[i]) for i in range(chunk, min(count, chunk + 500)))
            )
        before = await command_count(client.store.redis)
        done_key = client.keys.shard(0).index_status("COMPLETED")
        with roles(settings, "dispatcher", "scheduler", concurrency=concurrency), Timer() as timer:
            while await client.store.redis.zcard(done_key) < count:  # noqa: ASYNC110 - polls Redis, not a local flag
                await asyncio.sleep(0.01)
        after = await command_count(client.store.redis)
        history = await client.history(ids[0])
    steps_per_workflow = len(history) + 1  # each task result wakes one step, plus the first
    items = count * (steps_per_workflow + len(history))  # steps + task attempts
    return {
        "workflows_per_s": count / timer.seconds,
        "seconds": timer.seconds,
        "commands_per_item": (after - before) / items,
    }


async def _wait_registered(client: Client, name: str) -> None:
    deadline = time.monotonic() + 30
    while not await client.store.redis.zcard(client.keys.versions(name)):
        if time.monotonic() > deadline:
            raise TimeoutError("the dispatcher did not register")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)


async def latency(settings: Settings, count: int) -> dict[str, float]:
    """Start-to-result latency of a single-task workflow on an idle system, one at a time."""
    async with Client(settings=settings) as client:
        with roles(settings, "dispatcher", "scheduler"):
            await _wait_registered(client, "one_task")
            samples = []
            for i in range(count):
                start = time.perf_counter()
                handle = await client.start("one_task", i)
                await handle.result(timeout=10)
                samples.append((time.perf_counter() - start) * 1000)
    samples = samples[5:]
    return {"p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99)}


async def timer_lag(settings: Settings, count: int, sleep_ms: int) -> dict[str, float]:
    """How late durable timers fire after their due time (by the Redis clock)."""
    async with Client(settings=settings) as client:
        with roles(settings, "dispatcher", "scheduler"):
            await _wait_registered(client, "sleeper")
            lags = []
            for i in range(count):
                handle = await client.start("sleeper", sleep_ms, workflow_id=f"sleep-{uuid.uuid4().hex}")
                await handle.result(timeout=10)
                entry = (await client.history(handle.workflow_id))[0]
                assert entry.started_at is not None
                assert entry.finished_at is not None
                fired_after = (entry.finished_at - entry.started_at).total_seconds() * 1000
                lags.append(fired_after - sleep_ms)
                await asyncio.sleep(0.013 * (i % 5))  # vary the phase against the scheduler
    return {"p50_ms": percentile(lags, 50), "p99_ms": percentile(lags, 99), "max_ms": max(lags)}


async def redis_limit(settings: Settings, count: int) -> dict[str, float]:
    """The client-side limit: sequential and pipelined round trips of one Python process."""
    async with Client(settings=settings) as client:
        redis = client.store.redis
        with Timer() as sequential:
            for _ in range(count):
                await redis.ping()
        with Timer() as pipelined:
            for _ in range(count // 32):
                async with redis.pipeline(transaction=False) as pipe:
                    for _ in range(32):
                        pipe.ping()
                    await pipe.execute()
    return {"sequential_rt_per_s": count / sequential.seconds, "pipelined_cmds_per_s": count / pipelined.seconds}


def fmt(value: float) -> str:
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


async def main(arguments: Any) -> None:
    with redis() as server:

        def fresh() -> Settings:
            return Settings(redis_url=server.url, prefix=f"b{uuid.uuid4().hex[:8]}")

        rows: list[tuple[str, str, str]] = []
        limit = await redis_limit(fresh(), 5000)
        rows.append(("redis-py sequential round trips/s (limit)", fmt(limit["sequential_rt_per_s"]), ""))
        rows.append(("redis-py pipelined commands/s (limit)", fmt(limit["pipelined_cmds_per_s"]), ""))
        one = await drain(fresh(), "one_task", arguments.count, arguments.concurrency)
        rows.append(
            (
                "1-task workflows/s, one dispatcher",
                fmt(one["workflows_per_s"]),
                f"{one['commands_per_item']:.2f} Redis commands per step or task attempt",
            )
        )
        three = await drain(fresh(), "three_tasks", arguments.count, arguments.concurrency)
        rows.append(
            (
                "3-task workflows/s, one dispatcher",
                fmt(three["workflows_per_s"]),
                f"{three['commands_per_item']:.2f} Redis commands per step or task attempt",
            )
        )
        lat = await latency(fresh(), 200)
        rows.append(("1-task start-to-result latency p50 / p99 (ms)", f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}", ""))
        lag = await timer_lag(fresh(), 40, 50)
        rows.append(
            (
                "timer lag p50 / p99 / max (ms)",
                f"{lag['p50_ms']:.1f} / {lag['p99_ms']:.1f} / {lag['max_ms']:.1f}",
                "Redis-clock ms resolution",
            )
        )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>14}  notes")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>14}  {note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=3000, help="workflows per throughput run")
    parser.add_argument("--concurrency", type=int, default=200, help="dispatcher concurrency")
    asyncio.run(main(parser.parse_args()))
