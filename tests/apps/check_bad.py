"""Workflows that would break on replay: every flagged line is marked ``# BAD: <kind>``.

tests/test_check.py reads these markers, so each kind is asserted on its exact line.
"""
# ruff: noqa: ASYNC210, ASYNC221, ASYNC230, ASYNC240  (blocking calls in async code are the point of this file)

from __future__ import annotations

import asyncio
import os
import random as rnd
import subprocess
import threading
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from random import choice

from bdurable import Context, task, workflow


@task
async def allowed(x: int) -> int:
    return int(time.time()) + x  # fine: tasks run once, their results are recorded


def helper_reading_the_clock() -> float:
    return time.monotonic()  # BAD: clock


@workflow(version="1")
async def clocks_and_chance(ctx: Context, input: int) -> list[object]:
    started = datetime.now()  # BAD: clock
    stamp = time.time()  # BAD: clock
    token = uuid.uuid4()  # BAD: uuid
    roll = rnd.randint(1, 6)  # BAD: random
    pick = choice([1, 2, 3])  # BAD: random
    late = helper_reading_the_clock()
    ctx_is_fine = ctx.now()
    seeded = str(uuid.uuid5(uuid.NAMESPACE_DNS, "x"))  # deterministic: not flagged
    return [started, stamp, token, roll, pick, late, ctx_is_fine, seeded]


@workflow(version="1")
async def io_and_threads(ctx: Context, input: str) -> str:
    await asyncio.sleep(1)  # BAD: sleep
    with open(input) as handle:  # BAD: file
        text = handle.read()
    Path(input).write_text(text)  # BAD: file
    urllib.request.urlopen("https://example.com")  # BAD: network
    subprocess.run(["true"], check=False)  # BAD: subprocess
    os.system("true")  # BAD: subprocess
    threading.Thread(target=print).start()  # BAD: thread
    await asyncio.to_thread(time.sleep, 1)  # BAD: thread
    await allowed(1)
    return text


@workflow(version="1")
async def local_imports(ctx: Context, input: None) -> float:
    import time as clock
    from secrets import token_hex

    token_hex(4)  # BAD: random
    return clock.perf_counter()  # BAD: clock
