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
