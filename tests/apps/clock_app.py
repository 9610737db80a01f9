"""A workflow that reads the clock around a sleep and an event timeout (``tests/test_testing_environment.py``)."""

from __future__ import annotations

import contextlib

from bdurable import Context, EventTimeoutError, workflow


@workflow(name="clock_reader", version="1")
async def clock_reader(ctx: Context, input: None) -> list[str]:
    first = ctx.now()
    await ctx.sleep("3 days")
    with contextlib.suppress(EventTimeoutError):
        await ctx.wait_for_event("never", timeout="2 days")
    return [first.isoformat(), ctx.now().isoformat()]
