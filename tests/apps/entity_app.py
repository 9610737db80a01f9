"""Workflows that continue as new (``ctx.continue_as_new``) for the tests: an entity that sums events forever
in bounded batches, a loop that counts runs, and a cleanup that continues after a cancellation."""

from __future__ import annotations

from typing import Any

from typing_extensions import TypedDict  # pydantic validates TypedDicts from typing_extensions on 3.11

from bdurable import Context, WorkflowCancelledError, task, workflow


class Tally(TypedDict):
    total: int
    batch: int


@task(name="entity.bump")
async def bump(n: int) -> int:
    return n + 1


@task(name="entity.echo")
async def echo(value: Any) -> Any:
    return value


@workflow(name="tally", version="1")
async def tally(ctx: Context, state: Tally) -> int:
    """Adds up `add` events, `batch` per run; `{"stop": true}` ends it with the total."""
    total = state["total"]
    for _ in range(state["batch"]):
        event = await ctx.wait_for_event("add")
        if event.get("stop"):
            return total
        total += int(event["n"])
        await ctx.signal("total", total)
    return await ctx.continue_as_new({"total": total, "batch": state["batch"]})


@workflow(name="counting_loop", version="1")
async def counting_loop(ctx: Context, state: dict[str, int]) -> dict[str, int]:
    """One task per run, `runs` runs; each run starts a child when `children` is set."""
    count = await bump(state["count"])
    if state.get("children"):
        await ctx.execute(child_echo, count)
    if count >= state["runs"]:
        return {"count": count}
    return await ctx.continue_as_new({**state, "count": count})


@workflow(name="child_echo", version="1")
async def child_echo(ctx: Context, value: int) -> int:
    return int(await echo(value))


@workflow(name="stubborn", version="1")
async def stubborn(ctx: Context, state: dict[str, int]) -> str:
    """Catches a cancellation and continues as new: the next run sees the cancellation at its first await."""
    try:
        await ctx.wait_for_event("never")
    except WorkflowCancelledError:
        if state["run"] == 1:
            await ctx.continue_as_new({"run": 2})
        raise
    return "not reached"
