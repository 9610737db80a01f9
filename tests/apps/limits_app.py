"""Workflows and tasks with flow control (concurrency, rate limits, keys, workflow slots) for the tests."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from bdurable import Context, task, workflow

RUNNING: dict[str, int] = defaultdict(int)  # key -> calls running now (in this process)
MOST: dict[str, int] = defaultdict(int)  # key -> most calls seen running at once
STARTS: list[float] = []  # monotonic start time of every attempt of `paced`
SPANS: dict[str, list[tuple[float, float]]] = defaultdict(list)  # key -> (start, end) of each `per_key` call


@task(name="limits.capped", concurrency=5)
async def capped(index: int, hold: float) -> int:
    RUNNING["capped"] += 1
    MOST["capped"] = max(MOST["capped"], RUNNING["capped"])
    try:
        await asyncio.sleep(hold)
    finally:
        RUNNING["capped"] -= 1
    return index


@task(name="limits.paced", rate_limit="20/s")
async def paced(index: int) -> int:
    STARTS.append(time.monotonic())
    return index


@task(name="limits.per_key", concurrency=1, key=lambda order_id, step: order_id)
async def per_key(order_id: str, step: int) -> str:
    start = time.monotonic()
    await asyncio.sleep(0.01)
    SPANS[order_id].append((start, time.monotonic()))
    return f"{order_id}:{step}"


@workflow(name="capped_flow", version="1")
async def capped_flow(ctx: Context, input: dict[str, Any]) -> list[int]:
    return list(await asyncio.gather(*(capped(i, input["hold"]) for i in range(input["calls"]))))


@workflow(name="paced_flow", version="1")
async def paced_flow(ctx: Context, input: int) -> list[int]:
    return list(await asyncio.gather(*(paced(i) for i in range(input))))


@workflow(name="orders_flow", version="1")
async def orders_flow(ctx: Context, input: dict[str, Any]) -> list[str]:
    return [await per_key(input["order"], step) for step in range(input["steps"])]


@workflow(name="one_at_a_time", version="1", concurrency=2, key=lambda input: input["customer"])
async def one_at_a_time(ctx: Context, input: dict[str, Any]) -> str:
    await ctx.wait_for_event("go")
    return input["customer"]


@workflow(name="one_per_customer", version="1", concurrency=1, key=lambda input: input["customer"])
async def one_per_customer(ctx: Context, input: dict[str, Any]) -> str:
    await ctx.wait_for_event("go")
    return input["customer"]


@task(name="limits.noop")
async def noop(value: int) -> int:
    return value + 1


@workflow(name="one_task", version="1")
async def one_task(ctx: Context, input: int) -> int:
    return await noop(input)


@workflow(name="plain_quick", version="1")
async def plain_quick(ctx: Context, input: Any) -> Any:
    return input
