"""A workflow whose task outlasts a short ``Worker.stop(timeout=...)``: what its attempts did is noted here (the
roles run in the test's own process)."""

from __future__ import annotations

import asyncio

from bdurable import Context, task, workflow

BEGAN: list[int] = []
ENDED: list[int] = []


@task
async def slow_step(n: int) -> int:
    BEGAN.append(n)
    await asyncio.sleep(2)
    ENDED.append(n)
    return n


@workflow(version="1")
async def slow(ctx: Context, n: int) -> int:
    return await slow_step(n)


STUBBORN: list[int] = []


@task
async def stubborn_step(n: int) -> int:
    """Cleans up for a while once cancelled (the first attempt); later attempts return at once."""
    STUBBORN.append(n)
    if len(STUBBORN) > 1:
        return n
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(1.5)
        raise
    return n


@workflow(version="1")
async def stubborn(ctx: Context, n: int) -> int:
    return await stubborn_step(n)
