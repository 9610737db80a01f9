"""``nd_flow`` of ``engine_app`` changed without a version bump: a different task at the same position.

Deploying this against runs recorded by the original code must fail them with ``NonDeterminismError``.
"""

from __future__ import annotations

from typing import Any

from bdurable import Context, task, workflow


@task
async def other_step() -> str:
    return "other"


@workflow(name="nd_flow", version="1")
async def nd_flow(ctx: Context, input: Any) -> str:
    await other_step()
    await ctx.sleep("300ms")
    return "altered"


@workflow(name="nd_short", version="1")
async def nd_short(ctx: Context, input: Any) -> str:
    """The recorded calls were a task, then a sleep; this code returns without making them."""
    return "altered"
