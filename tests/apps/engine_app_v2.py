"""Version "2" of the ``versioned`` workflow of ``engine_app`` (a blue/green deploy's new code)."""

from __future__ import annotations

import asyncio
from typing import Any

from bdurable import Context, task, workflow


@task(max_attempts=1)  # a single attempt: a dispatcher that cannot run it must never take it
async def v2_tag() -> str:
    return "2"


@workflow(name="versioned", version="2")
async def versioned_v2(ctx: Context, input: dict[str, Any]) -> dict[str, str]:
    if input.get("sleep"):
        await ctx.sleep(input["sleep"])
    if not input.get("task", True):
        return {"workflow": ctx.version}
    return {"workflow": ctx.version, "task": await v2_tag()}


@task(max_attempts=1)
async def v2_hold() -> str:
    """Keeps a dispatcher with ``concurrency=1`` busy for a moment."""
    await asyncio.sleep(0.3)
    return "held"


@workflow(version="1")
async def new_feature(ctx: Context, input: Any) -> list[str]:
    """A workflow that only the new deploy has; its tasks exist only there."""
    return list(await asyncio.gather(v2_hold(), v2_tag()))
