"""Workflows that cross shards: children, events, signals, cancellation, on a sharded keyspace."""

from __future__ import annotations

import asyncio

from bdurable import Context, WorkflowCancelledError, task, workflow


@task
async def double(n: int) -> int:
    return n * 2


@task
async def slow() -> None:
    await asyncio.sleep(30)


@workflow(version="1")
async def leaf(ctx: Context, n: int) -> int:
    return await double(n)


@workflow(version="1")
async def fan(ctx: Context, n: int) -> dict[str, object]:
    children = await asyncio.gather(*(ctx.execute(leaf, i, workflow_id=f"{ctx.workflow_id}-c{i}") for i in range(n)))
    await ctx.signal("children.done", {"count": n})
    approval = await ctx.wait_for_event("go")
    await ctx.sleep("50ms")
    return {"children": list(children), "approval": approval}


@workflow(version="1")
async def stuck_child(ctx: Context, n: int) -> None:
    await slow()


@workflow(version="1")
async def parent_of_stuck(ctx: Context, n: int) -> str:
    try:
        await ctx.execute(stuck_child, n, workflow_id=f"{ctx.workflow_id}-stuck")
    except WorkflowCancelledError:
        return "cleaned up"
    return "unexpected"


COUNTED: dict[tuple[int, int], int] = {}  # (workflow, step) -> runs of `counted`, in this process


@task
async def counted(n: int, i: int) -> None:
    COUNTED[(n, i)] = COUNTED.get((n, i), 0) + 1
    await asyncio.sleep(0.2)  # in flight while the test freezes a node


@workflow(version="1")
async def paced(ctx: Context, n: int) -> int:
    """Tasks and timers over a few seconds, then an event: every role has a part."""
    for i in range(6):
        await counted(n, i)
        await ctx.sleep("100ms")
    await ctx.wait_for_event("go")
    return n
