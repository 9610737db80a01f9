"""Workflows and tasks of the signal-bus suite: events, keyed publishes, signals and cancellation.

In-process dispatchers run these tasks in the test's own process, so tasks report what they did through
module-level bookkeeping keyed by a token that each test passes in the input. Real dispatcher processes
(``--app bus_app``) import this module too: there the bookkeeping is simply unused.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from bdurable import ChildWorkflowError, Context, EventTimeoutError, WorkflowCancelledError, task, workflow

# token -> what the tasks of one test did
CALLS: dict[str, list[Any]] = defaultdict(list)
# token -> how many times the workflow function was entered (1 + number of replays from scratch)
ENTERED: dict[str, int] = defaultdict(int)


# -- tasks ------------------------------------------------------------------------------------------------


@task
async def note(token: str, label: Any) -> Any:
    CALLS[token].append(label)
    return label


@task(max_attempts=1)
async def slow(token: str, seconds: float) -> str:
    """Sleeps; a cancellation of its workflow must stop it on its dispatcher."""
    CALLS[token].append(("slow started", time.monotonic()))
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        CALLS[token].append(("slow cancelled", time.monotonic()))
        raise
    CALLS[token].append(("slow finished", time.monotonic()))
    return "slow done"


@task(max_attempts=1)
async def stubborn(token: str, seconds: float) -> str:
    """Ignores being cancelled and returns anyway: its late result must be discarded."""
    CALLS[token].append("stubborn started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await asyncio.sleep(deadline - time.monotonic())
        except asyncio.CancelledError:
            CALLS[token].append("stubborn ignored a cancellation")
    CALLS[token].append("stubborn returned")
    return "late result"


@task(max_attempts=1, on_exhausted="park")
async def parks(token: str) -> None:
    CALLS[token].append("parks failed")
    raise RuntimeError("this task always fails")


@task
async def cleanup(token: str, reason: str | None) -> str:
    CALLS[token].append(("cleanup", reason))
    return f"cleaned up after {reason}"


# -- events -----------------------------------------------------------------------------------------------


@workflow(version="1")
async def wait_events(ctx: Context, input: dict[str, Any]) -> list[Any]:
    """Wait for ``count`` events named ``name``, one after the other; return their payloads in order."""
    received = []
    for _ in range(int(input.get("count", 1))):
        received.append(await ctx.wait_for_event(input.get("name", "go")))
    return received


@workflow(version="1")
async def wait_after_task(ctx: Context, input: dict[str, Any]) -> Any:
    """A task first: an event sent meanwhile (before the wait is registered) must be buffered."""
    await slow(input["token"], float(input.get("task_seconds", 0.3)))
    return await ctx.wait_for_event("go")


@workflow(version="1")
async def wait_keyed(ctx: Context, input: dict[str, Any]) -> Any:
    return await ctx.wait_for_event(input["name"], key=input["key"], timeout=input.get("timeout"))


@workflow(version="1")
async def wait_with_timeout(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    try:
        value = await ctx.wait_for_event("go", timeout=input["timeout"])
    except EventTimeoutError as error:
        return {"timed_out": True, "error": type(error).__name__, "message": str(error)}
    return {"timed_out": False, "value": value}


@workflow(version="1")
async def race_timeout(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    """Either the event arrives before the timeout, or the timeout wins and the event is then buffered:
    the second wait (no timeout) must return it at once. Never both, never neither."""
    try:
        value = await ctx.wait_for_event("go", timeout=input["timeout"])
    except EventTimeoutError:
        late = await ctx.wait_for_event("go", timeout="5s")
        return {"outcome": "timeout", "late": late}
    return {"outcome": "event", "value": value}


# -- signals ----------------------------------------------------------------------------------------------


@workflow(version="1")
async def signal_steps(ctx: Context, input: dict[str, Any]) -> int:
    """``before`` signals, then for each round: wait for event ``go`` and emit one more signal."""
    emitted = 0
    for _ in range(int(input.get("before", 0))):
        await ctx.signal("tick", {"n": emitted})
        emitted += 1
    for _ in range(int(input.get("rounds", 0))):
        await ctx.wait_for_event("go")
        await ctx.signal("tick", {"n": emitted})
        emitted += 1
    return emitted


@workflow(version="1")
async def signal_sleeps(ctx: Context, input: dict[str, Any]) -> int:
    """Signals between sleeps and tasks; counts how often its code is entered (replays from scratch)."""
    ENTERED[input["token"]] += 1
    for n in range(int(input["rounds"])):
        await ctx.signal("tick", {"n": n})
        await ctx.sleep("20ms")
        await note(input["token"], n)
    await ctx.signal("done", None)
    return int(input["rounds"])


# -- cancellation -----------------------------------------------------------------------------------------


@workflow(version="1")
async def child_waits(ctx: Context, input: dict[str, Any]) -> str:
    await ctx.wait_for_event("never")
    return "child done"


async def _wait_at(ctx: Context, where: str, token: str) -> Any:
    if where == "task":
        return await slow(token, 30)
    if where == "sleep":
        return await ctx.sleep("1h")
    if where == "event":
        return await ctx.wait_for_event("never")
    if where == "keyed event":
        return await ctx.wait_for_event("never", key=token)
    if where == "child":
        return await ctx.execute(child_waits, {}, workflow_id=f"{ctx.workflow_id}-child")
    if where == "parked":
        return await parks(token)
    if where == "gather":
        return await asyncio.gather(
            slow(token, 30),
            ctx.sleep("1h"),
            ctx.wait_for_event("never"),
            ctx.execute(child_waits, {}, workflow_id=f"{ctx.workflow_id}-child"),
        )
    raise ValueError(where)


@workflow(version="1")
async def cancel_except(ctx: Context, input: dict[str, Any]) -> str:
    """Cleanup in ``except``, then re-raise: ends CANCELLED."""
    try:
        await _wait_at(ctx, input["at"], input["token"])
    except WorkflowCancelledError as cancelled:
        cleaned = await cleanup(input["token"], cancelled.reason)
        await ctx.signal("cleaned", cleaned)
        raise
    return "not cancelled"


@workflow(version="1")
async def cancel_finally(ctx: Context, input: dict[str, Any]) -> str:
    """Cleanup in ``finally`` (the cancellation propagates through it): ends CANCELLED."""
    try:
        await _wait_at(ctx, input["at"], input["token"])
    finally:
        cleaned = await cleanup(input["token"], "finally")
        await ctx.signal("cleaned", cleaned)
    return "not cancelled"


@workflow(version="1")
async def cancel_returns(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    """Catches the cancellation and returns: still CANCELLED, with its output kept."""
    try:
        await _wait_at(ctx, input["at"], input["token"])
    except WorkflowCancelledError as cancelled:
        cleaned = await cleanup(input["token"], cancelled.reason)
        return {"cleaned": cleaned, "reason": cancelled.reason}
    return {"cleaned": None, "reason": None}


@workflow(version="1")
async def parent_catches(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    try:
        await ctx.execute(child_waits, {}, workflow_id=f"{ctx.workflow_id}-child")
    except ChildWorkflowError as failed:
        return {"error_type": failed.error_type, "child": failed.workflow_id, "message": failed.message}
    return {"error_type": None}


@workflow(version="1")
async def stubborn_flow(ctx: Context, input: dict[str, Any]) -> str:
    return await stubborn(input["token"], float(input["seconds"]))


@workflow(version="1")
async def quick(ctx: Context, input: Any) -> Any:
    return input


@workflow(name="versioned_wait", version="1")
async def versioned_wait(ctx: Context, input: dict[str, Any]) -> Any:
    try:
        return await ctx.wait_for_event("go")
    except WorkflowCancelledError as cancelled:
        await cleanup(input["token"], cancelled.reason)
        raise


@workflow(version="1")
async def wait_keyed_twice(ctx: Context, input: dict[str, Any]) -> list[Any]:
    """Two waits on the same (name, key) at once: one workflow, two waits."""
    return list(
        await asyncio.gather(
            ctx.wait_for_event(input["name"], key=input["key"]), ctx.wait_for_event(input["name"], key=input["key"])
        )
    )
