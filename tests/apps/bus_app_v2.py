"""Version "2" of ``bus_app``'s ``versioned_wait`` (a blue/green deploy's new code)."""

from __future__ import annotations

from typing import Any

from bdurable import Context, workflow


@workflow(name="versioned_wait", version="2")
async def versioned_wait_v2(ctx: Context, input: dict[str, Any]) -> Any:
    return {"v2": await ctx.wait_for_event("go")}
