"""Helpers of the web console's tests: the real ``bdurable console`` command, a process of its own on a free
loopback port (``--port 0``: the port it bound is read from its log), its settings passed in the environment."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from support import eventually, within

from bdurable import Settings

TOKEN = "s3cret-console-token"
LISTEN_TIMEOUT = 30.0  # a new Python process: imports first, then it listens


@dataclasses.dataclass
class RunningConsole:
    process: asyncio.subprocess.Process
    url: str
    http: httpx.AsyncClient


def environment(settings: Settings, token: str | None) -> dict[str, str]:
    """This process's environment with every ``BDURABLE_*`` setting taken from ``settings`` (logs in JSON)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BDURABLE_")}
    env.update(settings.to_env())
    if token is not None:
        env["BDURABLE_CONSOLE_TOKEN"] = token
    env["BDURABLE_LOG_FORMAT"] = "json"
    return env


def listening_url(log: Path) -> str | None:
    """The address in the console's ``console listening`` log line, once it is written."""
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == "console listening":
                return str(record["url"])
    return None


def exited(process: asyncio.subprocess.Process, log: Path) -> str:
    return f"the console exited {process.returncode}:\n{log.read_text(errors='replace')}"


async def stop(process: asyncio.subprocess.Process, log: Path, timeout: float) -> None:
    """SIGTERM, as a deployment stops it: it must end its streams and exit 0 within ``timeout`` seconds."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        await within(timeout, process.wait())
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode == 0, exited(process, log)


@asynccontextmanager
async def running_console(
    settings: Settings, *, host: str = "127.0.0.1", token: str | None = TOKEN, read_only: bool = False
) -> AsyncIterator[RunningConsole]:
    """``bdurable console`` on a free port; stopped with SIGTERM, streams and all, on the way out."""
    options = ["--host", host, "--port", "0", *(["--read-only"] if read_only else [])]
    with tempfile.TemporaryDirectory(prefix="bdurable-console-") as folder:
        log = Path(folder) / "console.log"
        with open(log, "wb") as output:  # noqa: ASYNC230  # a local file, opened once
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bdurable.cli", "console", *options,
                env=environment(settings, token), stdout=output, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:

            def listening() -> str | None:
                assert process.returncode is None, exited(process, log)
                return listening_url(log)

            address = await eventually(listening, timeout=LISTEN_TIMEOUT)
            url = f"http://127.0.0.1:{urlsplit(address).port}"
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:

                async def ready() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                with contextlib.suppress(AssertionError):  # connected to Redis (an unreachable one: go on after 3 s)
                    await eventually(ready, timeout=3)
                yield RunningConsole(process, url, http)
        finally:
            await stop(process, log, timeout=15)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
