"""The workflow ``bench_latency_chain.py`` measures: ``bench_app.one_task``'s shape (one task, then the result),
its task noting the wall-clock time its code runs (in the dispatcher's process, where the benchmark reads it)."""

from __future__ import annotations

import time

from bdurable import Context, task, workflow

NOTED: list[tuple[str, float]] = []


@task
async def noted_step(n: int) -> int:
    NOTED.append(("attempt_began", time.time()))
    return n + 1


@workflow(version="1")
async def chain_one_task(ctx: Context, n: int) -> int:
    return await noted_step(n)
