"""Workflows measured by the benchmarks."""

from __future__ import annotations

from bdurable import Context, task, workflow


@task
async def step(n: int) -> int:
    return n + 1


@workflow(version="1")
async def one_task(ctx: Context, n: int) -> int:
    return await step(n)


@workflow(version="1")
async def three_tasks(ctx: Context, n: int) -> int:
    n = await step(n)
    n = await step(n)
    return await step(n)


@workflow(version="1")
async def sleeper(ctx: Context, ms: int) -> int:
    await ctx.sleep(ms / 1000)
    return ms


@workflow(version="1")
async def long_chain(ctx: Context, steps: int) -> int:
    n = 0
    for _ in range(steps):
        n = await step(n)
    return n


@workflow(version="1")
async def chain_then_sleep(ctx: Context, spec: dict[str, float]) -> int:
    """``steps`` tasks, a sleep of ``sleep`` seconds (restart the dispatcher meanwhile), one more task.

    The step after the sleep is a full replay when the dispatcher that runs it has no copy in memory.
    """
    n = 0
    for _ in range(int(spec["steps"])):
        n = await step(n)
    await ctx.sleep(spec["sleep"])
    return await step(n)


@task(max_attempts=5, backoff="200ms")
async def hold(key: str, url: str) -> int:
    """Record which process runs this attempt and when, then block: the recovery benchmark kills it."""
    import asyncio
    import os
    import time

    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        await client.rpush(key, f"{os.getpid()} {time.time()}")
    finally:
        await client.aclose()
    await asyncio.sleep(3600)
    return os.getpid()


@workflow(version="1")
async def held(ctx: Context, input: dict[str, str]) -> int:
    return await hold(input["key"], input["url"])


@task(concurrency=100_000)  # never binding: measures what a limit's bookkeeping costs
async def limited_step(n: int) -> int:
    return n + 1


@workflow(version="1")
async def three_limited_tasks(ctx: Context, n: int) -> int:
    n = await limited_step(n)
    n = await limited_step(n)
    return await limited_step(n)


@task(concurrency=5)  # binding: at most 5 at once, fleet-wide
async def capped_step(n: int) -> int:
    return n + 1


@workflow(version="1")
async def three_capped_tasks(ctx: Context, n: int) -> int:
    n = await capped_step(n)
    n = await capped_step(n)
    return await capped_step(n)


@workflow(version="1")
async def held_open(ctx: Context, payload: str) -> int:
    """One task with the payload, then a wait: the run stays in its dispatcher's cache (bench_memory.py)."""
    size = await measure(payload)
    await ctx.wait_for_event("close")
    return size


@task
async def measure(payload: str) -> int:
    return len(payload)
