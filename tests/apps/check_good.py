"""Workflows that replay safely: `bdurable check` finds nothing here."""

from __future__ import annotations

import random
import time
from datetime import datetime

from bdurable import Context, task, workflow


@task
async def fetch_rate(currency: str) -> float:
    # Tasks may read the clock and do I/O: their results are recorded once.
    started = time.time()
    return random.random() + (time.time() - started)


def shape(value: float) -> dict[str, float]:
    return {"rate": round(value, 4)}


@workflow(version="1")
async def convert(ctx: Context, input: dict[str, str]) -> dict[str, float]:
    now: datetime = ctx.now()
    jitter = ctx.random()
    ident = ctx.uuid4()
    await ctx.sleep("1s")
    rate = await fetch_rate(input["currency"])
    ctx.log.info("converted", at=now.isoformat(), id=str(ident))
    return shape(rate + jitter)
