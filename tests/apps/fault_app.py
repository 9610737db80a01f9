"""Workflows and tasks of the fault suite (tests/faults/), run by real dispatcher processes.

The fault tests kill the processes that run these tasks, so the tasks cannot report through memory: each
one records what it did in Redis, through its own client (``BDURABLE_REDIS_URL``), under test-owned keys
``<prefix>:fx:*`` (``BDURABLE_PREFIX``) that the engine never touches:

- ``<prefix>:fx:runs``        hash  ``<workflow id>:<n>`` -> how many times task n of that workflow started
- ``<prefix>:fx:runlog``      list  ``<workflow id>:<n>:<pid>``: which process ran each attempt, in order
- ``<prefix>:fx:final``       hash  workflow id -> pid: the final side effect, applied once per workflow
                                    (guarded by an idempotency key, the workflow id: tasks are at-least-once)
- ``<prefix>:fx:final_runs``  hash  workflow id -> how many times the final task ran (raw executions)
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any, NotRequired

import redis.asyncio as aioredis
from typing_extensions import TypedDict

from bdurable import Context, TaskFailedError, task, workflow

_clients: dict[int, aioredis.Redis] = {}


def fx_key(name: str, prefix: str | None = None) -> str:
    """A test-owned key of the fault suite (outside the engine's key schema, but under the prefix)."""
    return f"{prefix or os.environ['BDURABLE_PREFIX']}:fx:{name}"


def _redis() -> aioredis.Redis:
    """One client per event loop of this process (the dispatcher runs tasks on its main loop)."""
    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None:
        client = aioredis.Redis.from_url(
            os.environ["BDURABLE_REDIS_URL"], decode_responses=True, socket_connect_timeout=2, socket_timeout=5
        )
        _clients[loop_id] = client
    return client


async def _record_run(workflow_id: str, n: int) -> None:
    async with _redis().pipeline(transaction=False) as pipe:
        pipe.hincrby(fx_key("runs"), f"{workflow_id}:{n}", 1)
        pipe.rpush(fx_key("runlog"), f"{workflow_id}:{n}:{os.getpid()}")
        await pipe.execute()


# -- tasks ------------------------------------------------------------------------------------------------


@task(max_attempts=10, backoff="100ms")
async def work(workflow_id: str, n: int, delay: float) -> str:
    """A step of work with a side effect (its run is recorded first), then ``delay`` seconds of 'I/O'."""
    await _record_run(workflow_id, n)
    if delay:
        await asyncio.sleep(delay)
    return f"{workflow_id}:{n}"


@task(max_attempts=10, backoff="100ms")
async def finish(workflow_id: str, n: int, results: list[str], delay: float) -> str:
    """The final side effect: at-least-once like every task, applied once thanks to an idempotency key."""
    await _record_run(workflow_id, n)
    if delay:
        await asyncio.sleep(delay)
    client = _redis()
    await client.hincrby(fx_key("final_runs"), workflow_id, 1)
    await client.hsetnx(fx_key("final"), workflow_id, str(os.getpid()))
    return f"receipt:{workflow_id}:{len(results)}"


@task(max_attempts=1)
async def work_once(workflow_id: str, n: int) -> str:
    """A task that must not run twice (one attempt): its first attempt is its last."""
    await _record_run(workflow_id, n)
    return f"{workflow_id}:{n}"


@task(max_attempts=3, backoff="100ms")
async def poison(workflow_id: str) -> str:
    """Kills the process that runs it (like a segfault or the OOM killer): it never raises."""
    await _record_run(workflow_id, 1)
    os.kill(os.getpid(), signal.SIGKILL)
    await asyncio.sleep(60)  # never reached
    return "unreachable"


@task(max_attempts=2, backoff="1500ms")
async def flaky(workflow_id: str) -> str:
    """Fails its first attempt (a retry then waits 1.5 s in Redis, where a test can tamper with it)."""
    await _record_run(workflow_id, 1)
    if int(await _redis().hget(fx_key("runs"), f"{workflow_id}:1") or 0) == 1:
        raise RuntimeError("first attempt fails")
    return "second attempt"


# -- workflows --------------------------------------------------------------------------------------------


class FiveInput(TypedDict):
    delay: float  # seconds each task takes
    final_delay: NotRequired[float]


@workflow(version="1.0")
async def five_steps(ctx: Context, input: FiveInput) -> dict[str, Any]:
    """Five tasks in a row, a progress signal after each; the fifth is the final side effect."""
    wf = ctx.workflow_id
    results: list[str] = []
    for n in range(1, 5):
        results.append(await work(wf, n, input["delay"]))
        await ctx.signal("progress", {"n": n})
    receipt = await finish(wf, 5, results, input.get("final_delay", input["delay"]))
    await ctx.signal("done", {"receipt": receipt})
    return {"results": results, "receipt": receipt}


class SleeperInput(TypedDict):
    seconds: float


@workflow(version="1.0")
async def sleeper(ctx: Context, input: SleeperInput) -> str:
    """A durable timer, then a task."""
    await ctx.sleep(input["seconds"])
    return await work(ctx.workflow_id, 1, 0.0)


@workflow(version="1.0")
async def waiter(ctx: Context, input: dict[str, Any]) -> Any:
    """Waits for the ``go`` event (with a long timeout that must not fire), then a task."""
    payload = await ctx.wait_for_event("go", timeout="10 minutes")
    await work(ctx.workflow_id, 1, 0.0)
    await ctx.signal("went", payload)
    return payload


@workflow(version="1.0")
async def flaky_flow(ctx: Context, input: dict[str, Any]) -> str:
    """One task that succeeds on its second attempt."""
    return await flaky(ctx.workflow_id)


@workflow(version="1.0")
async def poison_task_flow(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    """Calls a task that kills its dispatcher on every attempt; reports the TaskFailedError it gets."""
    try:
        await poison(ctx.workflow_id)
    except TaskFailedError as error:
        return {"task_name": error.task_name, "attempts": error.attempts, "error_type": error.error_type}
    return {"unexpected": "the poison task returned"}


@workflow(version="1.0")
async def poison_step_flow(ctx: Context, input: dict[str, Any]) -> str:
    """Workflow code that kills the dispatcher replaying it (a crashing C extension, say)."""
    os._exit(1)


@workflow(version="1.0")
async def poison_after_task_flow(ctx: Context, input: dict[str, Any]) -> str:
    """Workflow code that kills its dispatcher once it has its task's result: the step that would commit with
    the task (run right after it, on the same dispatcher) must not make the task look like the poison."""
    if input.get("one_attempt"):
        await work_once(ctx.workflow_id, 1)
    else:
        await work(ctx.workflow_id, 1, 0)
    os._exit(1)
