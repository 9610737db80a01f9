"""Workflows of the web console's tests (``tests/test_console_*.py``): one of every kind of durable call, a
task that parks on the dead-letter queue until retried, a wait to cancel, and a failure with a traceback."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bdurable import Context, NonRetryableError, WorkflowCancelledError, task, workflow

# token -> what the tasks did (the in-process dispatcher runs them in the test's own process)
CALLS: dict[str, list[str]] = defaultdict(list)


@task
async def greet(name: str) -> str:
    return f"hello {name}"


@task(max_attempts=1, on_exhausted="park")
async def flaky(token: str) -> str:
    """Fails on its first attempt (the call parks on the dead-letter queue), succeeds once retried."""
    CALLS[token].append("flaky")
    if CALLS[token].count("flaky") == 1:
        raise RuntimeError("first attempt fails on purpose")
    return "recovered"


@task(max_attempts=1)
async def explode(reason: str) -> str:
    raise NonRetryableError(reason)


@workflow(version="1.0")
async def payment(ctx: Context, input: dict[str, Any]) -> str:
    return await greet(str(input["who"]))


@workflow(version="1.0")
async def journey(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    """A task, a signal, a child workflow, a short sleep, then a wait for ``approve``: every kind of call."""
    hello = await greet(str(input.get("who", "world")))
    await ctx.signal("progress", {"step": "greeted", "text": hello})
    paid = await ctx.execute(payment, {"who": "child"})
    await ctx.sleep("50ms")
    approval = await ctx.wait_for_event("approve", timeout="1h")
    return {"hello": hello, "paid": paid, "approval": approval}


@workflow(version="1.0")
async def parked(ctx: Context, input: str) -> str:
    """A task that parks on the dead-letter queue; an operator's retry lets the workflow finish."""
    return await flaky(input)


@workflow(version="1.0")
async def waiter(ctx: Context, input: Any) -> str:
    """Waits for an event that never comes; a cancellation ends it."""
    try:
        await ctx.wait_for_event("never")
    except WorkflowCancelledError:
        await ctx.signal("cancelled", {"input": input})
        raise
    return "not cancelled"


@workflow(version="1.0")
async def doomed(ctx: Context, input: str) -> str:
    """Fails: its task raises, the workflow lets the error through (FAILED, with a traceback)."""
    return await explode(input)
