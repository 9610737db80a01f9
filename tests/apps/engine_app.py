"""Workflows and tasks of the engine test suite (the programming model).

In-process dispatchers run these tasks in the test's own process and event loop, so tasks report what
they did through module-level bookkeeping keyed by a token that each test passes in the input.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from bdurable import (
    ChildWorkflowError,
    Context,
    NonRetryableError,
    PayloadTooLargeError,
    TaskFailedError,
    task,
    workflow,
)

# token -> what the tasks of one test did (labels, attempt times, workflow ids ...)
CALLS: dict[str, list[Any]] = defaultdict(list)
# token -> a barrier the parallel tasks of one test meet at (created by the test, in its loop)
BARRIERS: dict[str, asyncio.Barrier] = {}


def failure_of(error: TaskFailedError) -> dict[str, Any]:
    return {
        "task_name": error.task_name,
        "attempts": error.attempts,
        "error_type": error.error_type,
        "message": error.message,
    }


# -- tasks ------------------------------------------------------------------------------------------------


@task
async def add(a: int, b: int) -> int:
    return a + b


@task
async def double(x: int) -> int:
    return 2 * x


@task
async def echo(value: Any) -> Any:
    return value


@task
def where_am_i(token: str) -> dict[str, Any]:
    """A plain ``def`` task: it must run in a worker thread, not on the event loop's thread."""
    CALLS[token].append("sync")
    current = threading.current_thread()
    return {"main_thread": current is threading.main_thread(), "thread": current.name}


@task
def blocking_sleep(seconds: float) -> float:
    """Blocks its thread (``time.sleep``): only harmless because plain ``def`` tasks run in threads."""
    time.sleep(seconds)
    return seconds


@task
async def record(token: str, label: str) -> str:
    CALLS[token].append(label)
    return label


@task(max_attempts=1)
async def meet(token: str, index: int) -> int:
    """Returns only once every parallel call of the test has reached the barrier (they ran together)."""
    async with asyncio.timeout(5):
        await BARRIERS[token].wait()
    return index


@task(max_attempts=1)
async def explode(message: str) -> None:
    raise ValueError(message)


@task(max_attempts=3, backoff="50ms")
async def flaky(token: str) -> int:
    CALLS[token].append(time.monotonic())
    attempt = len(CALLS[token])
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


@task(max_attempts=2, backoff="50ms")
async def always_fails(token: str) -> None:
    CALLS[token].append("attempt")
    raise RuntimeError("nope")


@task(max_attempts=5, backoff="50ms")
async def refuses(token: str) -> None:
    CALLS[token].append("attempt")
    raise NonRetryableError("no way")


class Fatal(BaseException):
    """What some libraries raise past ``except Exception``."""


@task(max_attempts=2, backoff="50ms")
async def exits(token: str) -> None:
    CALLS[token].append("attempt")
    sys.exit(3)  # what argparse or click do on a bad command line


@task(max_attempts=2, backoff="50ms")
def exits_in_a_thread(token: str) -> None:
    CALLS[token].append("attempt")
    raise KeyboardInterrupt


@task(max_attempts=2, backoff="50ms")
async def raises_its_own_cancel(token: str) -> None:
    CALLS[token].append("attempt")
    raise asyncio.CancelledError  # leaked by a library's own cancel scope: nobody cancelled this attempt


@task(max_attempts=2, backoff="50ms")
async def raises_a_base_exception(token: str) -> None:
    CALLS[token].append("attempt")
    raise Fatal("past except Exception")


@task(max_attempts=2, backoff="50ms", timeout="100ms")
async def too_slow(token: str) -> str:
    CALLS[token].append("attempt")
    await asyncio.sleep(1)
    CALLS[token].append("finished")
    return "late"


@task(max_attempts=3, backoff="50ms")
async def big_result(token: str, size: int) -> str:
    CALLS[token].append("attempt")
    return "x" * size


@task
async def long_task(token: str, seconds: float = 1) -> str:
    CALLS[token].append("start")
    await asyncio.sleep(seconds)
    CALLS[token].append("done")
    return "finished"


@task
async def first_step() -> str:
    return "first"


@task(max_attempts=1)  # a single attempt: a dispatcher that cannot run it must never take it
async def v1_tag() -> str:
    return "1"


# -- workflows --------------------------------------------------------------------------------------------


@workflow(version="1")
async def calls_flow(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    total = await add(2, 3)
    info = await where_am_i(input["token"])
    return {"sum": total, "info": info}


@workflow(version="1")
async def blocking_flow(ctx: Context, input: dict[str, Any]) -> list[float]:
    return list(await asyncio.gather(*(blocking_sleep(input["seconds"]) for _ in range(input["n"]))))


@workflow(version="1")
async def sleeps_flow(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    await ctx.sleep("200ms")
    await ctx.sleep(0.2)
    await ctx.sleep(timedelta(milliseconds=200))
    target = ctx.now() + timedelta(milliseconds=200)
    await ctx.sleep_until(target)
    return {"target": target.isoformat()}


@workflow(version="1")
async def child_double(ctx: Context, input: dict[str, Any]) -> int:
    return int(await double(input["n"]))


@workflow(version="1")
async def child_fails(ctx: Context, input: dict[str, Any]) -> None:
    raise ValueError(f"child says {input['why']}")


@workflow(version="1")
async def parent_flow(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    default_id = await ctx.execute(child_double, {"n": 21})
    named = await ctx.execute(child_double, {"n": 5}, workflow_id=input["child_id"])
    try:
        await ctx.execute(child_fails, {"why": "no"})
    except ChildWorkflowError as error:
        failure = {"workflow_id": error.workflow_id, "error_type": error.error_type, "message": error.message}
    else:
        failure = None
    return {"default": default_id, "named": named, "failure": failure}


@workflow(version="1")
async def uncaught_child_flow(ctx: Context, input: dict[str, Any]) -> None:
    await ctx.execute(child_fails, {"why": "uncaught"})


@workflow(version="1")
async def fails_flow(ctx: Context, input: dict[str, Any]) -> None:
    await echo("before")
    raise ValueError(f"bad input {input['n']}")


@workflow(version="1")
async def past_sleep_flow(ctx: Context, input: dict[str, Any]) -> str:
    await ctx.sleep_until(ctx.now() - timedelta(hours=1))
    return "woke"


@workflow(version="1")
async def deterministic_flow(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    before = [str(ctx.uuid4()), ctx.now().isoformat(), ctx.random()]
    await echo(before)
    await ctx.sleep("50ms")
    after = [str(ctx.uuid4()), ctx.now().isoformat(), ctx.random()]
    await echo(after)
    return {"before": before, "after": after}


@workflow(version="1")
async def signal_flow(ctx: Context, input: dict[str, Any]) -> str:
    await ctx.signal("progress", {"pct": 50})
    await ctx.sleep("50ms")
    await echo("after the signal")
    return "ok"


async def _double_all(values: list[int]) -> list[int]:
    return [await double(v) for v in values]


@workflow(version="1")
async def control_flow(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    total = 0
    for i in range(input["n"]):
        if i % 2 == 0:
            total += await double(i)
        else:
            total += await add(i, 100)
    doubled = await _double_all(input["values"])
    label = "big" if total > 200 else "small"
    return {"total": total, "doubled": doubled, "label": label}


@workflow(version="1")
async def gather_flow(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    token = input["token"]
    met = await asyncio.gather(*(meet(token, i) for i in range(input["n"])))

    async def pair() -> list[int]:
        return list(await asyncio.gather(add(1, 2), double(10)))

    nested = await asyncio.gather(pair(), asyncio.gather(add(3, 4), echo("e")), double(50))
    return {"met": list(met), "nested": list(nested)}


@workflow(version="1")
async def gather_failure_flow(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    try:
        await asyncio.gather(add(1, 1), explode("in gather"), double(4))
    except TaskFailedError as error:
        caught = error.message
    else:
        caught = "nothing"
    later = await add(10, 10)
    return {"caught": caught, "later": later}


@workflow(version="1")
async def try_flow(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    seen: list[Any] = []
    try:
        await explode("boom")
        seen.append("not reached")
    except TaskFailedError as error:
        seen.append(failure_of(error))
    finally:
        seen.append(await record(input["token"], "finally"))
    return {"seen": seen}


@task(max_attempts=3, backoff="10ms")
async def answers_none(token: str) -> str:
    """Says it returns text, returns nothing: a mistake another attempt would repeat."""
    CALLS[token].append("answered")
    return None  # type: ignore[return-value]


@task(max_attempts=3, backoff="10ms")
async def takes_a_number(token: str, n: int) -> int:
    CALLS[token].append("ran")
    return n


@workflow(version="1")
async def wrong_output_flow(ctx: Context, input: dict[str, Any]) -> int:
    return "not a number"  # type: ignore[return-value]


@workflow(version="1")
async def flaky_flow(ctx: Context, input: dict[str, Any]) -> int:
    return int(await flaky(input["token"]))


@workflow(version="1")
async def catch_flow(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    """Runs one failing task (chosen by the input) and returns the TaskFailedError it received."""
    token = input["token"]
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "always_fails": lambda: always_fails(token),
        "refuses": lambda: refuses(token),
        "too_slow": lambda: too_slow(token),
        "answers_none": lambda: answers_none(token),
        "wrong_argument": lambda: takes_a_number(token, "not a number"),  # type: ignore[arg-type]
        "exits": lambda: exits(token),
        "exits_in_a_thread": lambda: exits_in_a_thread(token),
        "raises_its_own_cancel": lambda: raises_its_own_cancel(token),
        "raises_a_base_exception": lambda: raises_a_base_exception(token),
    }
    try:
        await calls[input["task"]]()
    except TaskFailedError as error:
        return failure_of(error)
    return {"error": None}


@workflow(version="1")
async def exit_flow(ctx: Context, how: str) -> None:
    """Workflow code raising what asyncio lets out of its event loop (in the workflow's coroutine, or in a task
    of its own: asyncio lets it out of the loop from there too)."""

    async def exits() -> None:
        sys.exit(3)

    if how == "exit":
        sys.exit(3)
    if how == "exit in a gathered coroutine":
        await asyncio.gather(exits())
    raise KeyboardInterrupt


@workflow(version="1")
async def big_result_flow(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    try:
        await big_result(input["token"], input["size"])
    except TaskFailedError as error:
        return failure_of(error)
    return {"error": None}


@workflow(version="1")
async def big_argument_flow(ctx: Context, input: dict[str, Any]) -> str:
    try:
        await echo("x" * input["size"])
    except PayloadTooLargeError:
        caught = "caught"
    else:
        caught = "not caught"
    await echo("still running")
    return caught


@workflow(version="1")
async def big_output_flow(ctx: Context, input: dict[str, Any]) -> str:
    return "x" * input["size"]


@workflow(version="1")
async def count_flow(ctx: Context, input: dict[str, Any]) -> str:
    return await record(input["token"], ctx.workflow_id)


@workflow(version="1")
async def quick(ctx: Context, input: Any) -> Any:
    return input


@workflow(version="1")
async def sleeper(ctx: Context, input: dict[str, Any]) -> str:
    await ctx.sleep(input.get("sleep", "1h"))
    return "woke"


@workflow(version="1")
async def sleep_then_tally(ctx: Context, input: dict[str, Any]) -> str:
    await ctx.sleep(input["sleep"])
    return await record(input["token"], ctx.workflow_id)


@workflow(version="1")
async def history_flow(ctx: Context, input: dict[str, Any]) -> int:
    total = await add(1, 2)
    await ctx.sleep("50ms")
    await ctx.signal("halfway", {"total": total})
    return int(await ctx.execute(child_double, {"n": total}))


@workflow(version="1")
async def drain_flow(ctx: Context, input: dict[str, Any]) -> str:
    return await long_task(input["token"])


@workflow(version="1")
async def long_drain_flow(ctx: Context, input: dict[str, Any]) -> str:
    return await long_task(input["token"], 3)  # three heartbeat timeouts of the tests' settings


@workflow(version="1")
async def nd_flow(ctx: Context, input: Any) -> str:
    await first_step()
    await ctx.sleep("300ms")
    return "original"


@workflow(name="versioned", version="1")
async def versioned_v1(ctx: Context, input: dict[str, Any]) -> dict[str, str]:
    if input.get("sleep"):
        await ctx.sleep(input["sleep"])
    if not input.get("task", True):
        return {"workflow": ctx.version}
    return {"workflow": ctx.version, "task": await v1_tag()}


class Order(BaseModel):
    order_id: str
    amount: int


@workflow(version="1")
async def typed_order(ctx: Context, input: Order) -> dict[str, Any]:
    return {"type": type(input).__name__, "order_id": input.order_id, "amount": input.amount}


@dataclass
class Point:
    x: int
    y: int


@workflow(version="1")
async def typed_point(ctx: Context, input: Point) -> dict[str, Any]:
    return {"type": type(input).__name__, "sum": input.x + input.y}


@workflow(version="1")
async def mirrored_point(ctx: Context, input: Point) -> Point:
    return Point(x=input.y, y=input.x)


@workflow(version="1")
async def nd_short(ctx: Context, input: Any) -> str:
    await first_step()
    await ctx.sleep("300ms")
    await first_step()
    return "original"
