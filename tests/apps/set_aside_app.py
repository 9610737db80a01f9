"""Workflows whose keys the set-aside tests spoil on purpose (``tests/test_set_aside.py``)."""

from __future__ import annotations

from typing import Any

from bdurable import Context, task, workflow


@task
async def echo(value: Any) -> Any:
    return value


@workflow(version="1")
async def one_task(ctx: Context, value: int) -> int:
    return int(await echo(value))


@workflow(version="1")
async def naps(ctx: Context, hours: int) -> str:
    await ctx.sleep(hours * 3600)
    return "rested"


@workflow(version="1")
async def waits(ctx: Context, name: str) -> Any:
    return await ctx.wait_for_event(name, timeout="30 days")
