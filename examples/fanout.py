"""Loops, conditionals and parallel fan-out with ``asyncio.gather`` over durable calls."""

from __future__ import annotations

import asyncio

from bdurable import Context, task, workflow


@task
async def score(item: str) -> int:
    return sum(ord(c) for c in item) % 100


@task
def archive(batch: list[str]) -> int:
    """A plain ``def`` task runs in a worker thread."""
    return len(batch)


@workflow(version="1.0")
async def score_batch(ctx: Context, items: list[str]) -> dict[str, int]:
    scores = await asyncio.gather(*(score(item) for item in items))  # all tasks run in parallel
    high = [item for item, value in zip(items, scores, strict=True) if value >= 50]
    archived = 0
    for start in range(0, len(high), 2):  # a loop of durable calls
        archived += await archive(high[start : start + 2])
    return {"items": len(items), "high": len(high), "archived": archived, "total": sum(scores)}
