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
