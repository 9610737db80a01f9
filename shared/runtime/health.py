"""The HTTP endpoint of a role: ``/metrics``, ``/livez`` and ``/readyz``.

``/livez`` answers 200 while the role's own loops tick (they call :meth:`Health.tick`); it never looks at
Redis, so a Redis blip does not make Kubernetes restart every pod. ``/readyz`` answers 200 when Redis
answers a PING and the role is serving, 503 otherwise and while it drains after SIGTERM.
A few dozen lines of asyncio instead of a web framework: three fixed GET routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress

from bdurable.runtime.metrics import Metrics

__all__ = ["Health", "HealthServer"]


class Health:
    """Liveness and readiness facts a role keeps up to date."""

    def __init__(self, stall_after: float) -> None:
        self.stall_after = stall_after
        self.last_tick = time.monotonic()
        self.serving = False

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_tick < self.stall_after


class HealthServer:
    def __init__(
        self,
        *,
        port: int,
        health: Health,
        metrics: Metrics,
        ping: Callable[[], Awaitable[object]],
        host: str,
    ) -> None:
        self.port = port
        self.host = host
        self.health = health
        self.metrics = metrics
        self.ping = ping
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; with port 0 the OS picks a free port, and ``port`` then says which."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers are not needed
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            status, body, kind = await self._route(parts[0] if parts else "", path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeError):
            pass
        finally:
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()

    async def _route(self, method: str, path: str) -> tuple[str, bytes, str]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"method not allowed\n", text
        if path == "/metrics":
            return "200 OK", self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
        if path == "/livez":
            if self.health.alive:
                return "200 OK", b"ok\n", text
            return "503 Service Unavailable", b"the role's loops have stalled\n", text
        if path == "/readyz":
            if not self.health.serving:
                return "503 Service Unavailable", b"not serving (starting or draining)\n", text
            try:
                async with asyncio.timeout(1.0):
                    await self.ping()
            except TimeoutError:
                return "503 Service Unavailable", b"redis unavailable: no answer within 1 s\n", text
            except Exception as exc:
                return "503 Service Unavailable", f"redis unavailable: {exc}\n".encode(), text
            return "200 OK", b"ok\n", text
        return "404 Not Found", b"not found\n", text
