"""Workflows started by schedules in the tests (``tests/test_schedules.py``, ``tests/faults/test_schedulers.py``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bdurable import Context, task, workflow

RAN: Counter[str] = Counter()  # workflow id -> times its task ran (in this process)


@task(name="schedules.note")
async def note(workflow_id: str, input: Any) -> str:
    RAN[workflow_id] += 1
    return f"ran {workflow_id}"


@workflow(name="scheduled_tick", version="1")
async def tick(ctx: Context, input: Any) -> str:
    """A short run: one task."""
    return await note(ctx.workflow_id, input)


@workflow(name="scheduled_hold", version="1")
async def hold(ctx: Context, input: Any) -> str:
    """A run that lasts until it receives the event `release` (or is cancelled)."""
    await ctx.wait_for_event("release", timeout="1h")
    return ctx.workflow_id


@workflow(name="scheduled_slow", version="1")
async def slow(ctx: Context, input: Any) -> str:
    """A run that outlasts its schedule's interval (a two-hour sleep): the next firing waits behind it."""
    await ctx.sleep("2h")
    return ctx.workflow_id
