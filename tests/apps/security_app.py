"""Workflows of the security suite (``tests/test_security.py``, ``tests/test_replicas.py``).

One workflow touches every kind of durable call (task, sleep, event by id, keyed event, signal, a task parked
on the dead-letter queue), another is cancelled and cleans up: run under least-privilege ACL users, over TLS,
or with replicas, they exercise every script and channel the roles use on a workflow's way.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from bdurable import Context, WorkflowCancelledError, task, workflow

# token -> what the tasks did (the in-process dispatcher runs them in the test's own process)
CALLS: dict[str, list[str]] = defaultdict(list)


@task
async def shout(text: str) -> str:
    return text.upper()


@task(max_attempts=1, on_exhausted="park")
async def flaky(token: str) -> str:
    """Fails on its first attempt (the call parks on the dead-letter queue), succeeds once retried."""
    CALLS[token].append("flaky")
    if CALLS[token].count("flaky") == 1:
        raise RuntimeError("first attempt fails on purpose")
    return "recovered"


@task
async def clean_up(token: str) -> str:
    CALLS[token].append("cleaned")
    return "cleaned"


@workflow(version="1")
async def guarded(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    """Task, sleep, signal, a parked task, an event by id and a keyed event, in that order."""
    token = str(input["token"])
    loud = await shout(str(input["text"]))
    await ctx.sleep("200ms")
    await ctx.signal("progress", {"loud": loud})
    recovered = await flaky(token)
    approval = await ctx.wait_for_event("approved", timeout="30s")
    payment = await ctx.wait_for_event("paid", key=token, timeout="30s")
    return {"loud": loud, "recovered": recovered, "approval": approval, "payment": payment}


@workflow(version="1")
async def cancellable(ctx: Context, input: str) -> str:
    """Waits for an event that never comes; on cancellation runs a durable clean-up task and re-raises."""
    try:
        await ctx.wait_for_event("never")
    except WorkflowCancelledError:
        await clean_up(input)
        raise
    return "not cancelled"


@workflow(version="1")
async def short(ctx: Context, input: str) -> str:
    """One task and one sleep: the smallest end-to-end run (TLS, replicas)."""
    loud = await shout(input)
    await ctx.sleep("100ms")
    return loud


@task(max_attempts=3, backoff="100ms")
async def hold(marker: str) -> str:
    """In a dispatcher process started with ``SECURITY_APP_HOLD=1``: leaves a marker file, then hangs (to be killed)."""
    if os.environ.get("SECURITY_APP_HOLD"):
        await asyncio.to_thread(Path(marker).touch)
        await asyncio.sleep(3600)
    return "rescued"


@workflow(version="1")
async def rescued(ctx: Context, input: str) -> str:
    """One task, held by a dispatcher that dies: only the reaper can get it going again."""
    return await hold(input)
