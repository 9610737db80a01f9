"""Workflows run by real dispatcher processes in the CLI tests (``tests/test_cli.py``)."""

from __future__ import annotations

from pydantic import BaseModel

from bdurable import Context, task, workflow


class Numbers(BaseModel):
    a: int
    b: int


@task
async def add(a: int, b: int) -> int:
    return a + b


@task(max_attempts=1)
async def explode(message: str) -> None:
    raise ValueError(message)


@task(max_attempts=1, on_exhausted="park")
async def fragile(message: str) -> str:
    raise RuntimeError(message)


@workflow(version="1")
async def adder(ctx: Context, input: Numbers) -> int:
    """Typed input: a mismatch is refused at start (exit 2)."""
    return await add(input.a, input.b)


@workflow(version="1")
async def failing(ctx: Context, input: str) -> None:
    await explode(input)


@workflow(version="1")
async def progress(ctx: Context, input: int) -> str:
    """Signals and a short durable sleep: something for `watch` to show."""
    for step in range(input):
        await ctx.signal("progress", {"done": step + 1, "of": input})
        await ctx.sleep("300ms")
    return "done"


@workflow(version="1")
async def approval(ctx: Context, input: str) -> dict[str, str]:
    """Waits for an event sent to this workflow, or published with key ``input``."""
    payload = await ctx.wait_for_event("approved", key=input or None)
    return {"approved_by": str(payload.get("by")) if isinstance(payload, dict) else str(payload)}


@workflow(version="1")
async def parked(ctx: Context, input: str) -> str:
    """A task that parks on the dead-letter queue when it fails."""
    return await fragile(input)


@task
async def pause(seconds: float) -> float:
    import asyncio

    await asyncio.sleep(seconds)
    return seconds


@workflow(version="1")
async def paused(ctx: Context, seconds: float) -> float:
    """One slow task: something a dispatcher is busy with when it is told to stop."""
    return await pause(seconds)
