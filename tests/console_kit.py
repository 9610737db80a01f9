"""Helpers of the web console's tests: a console served in the test's own event loop, on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from bdurable import Settings
from bdurable.runtime.service import Stopping
from bdurable.services.console import Console

TOKEN = "s3cret-console-token"


@dataclasses.dataclass
class RunningConsole:
    console: Console
    url: str
    http: httpx.AsyncClient


@asynccontextmanager
async def running_console(
    settings: Settings, *, host: str = "127.0.0.1", token: str | None = TOKEN, **options: Any
) -> AsyncIterator[RunningConsole]:
    """A console (uvicorn in a task of this loop) on a free port; stopped, streams and all, on the way out."""
    console = Console(dataclasses.replace(settings, console_token=token), host=host, port=0, **options)
    stopping = Stopping()
    task = asyncio.create_task(console.run(stopping))
    try:
        waiting = asyncio.create_task(console.listening.wait())
        done, _ = await asyncio.wait([waiting, task], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert waiting in done, "the console did not start listening"
        url = f"http://127.0.0.1:{console.port}"
        with contextlib.suppress(TimeoutError):  # connected to Redis: ready (a test of an unreachable Redis goes on)
            await asyncio.wait_for(console.connected.wait(), 3)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield RunningConsole(console, url, http)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 15)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
