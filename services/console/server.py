"""The console role: serve the web console with uvicorn until asked to stop.

It listens at once (``/livez`` answers, pages say Redis is not reached yet) and connects its client to Redis in
the background, retrying with backoff as every role does; ``/readyz`` turns 200 once Redis answers. On stop it
ends the live streams, lets requests in flight finish (5 s at most) and closes the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn

from bdurable.client import Client
from bdurable.config import Settings
from bdurable.runtime.metrics import Metrics, PayloadBytes
from bdurable.runtime.service import REDIS_ERRORS, Backoff, Stopping, new_worker_id
from bdurable.services.console.access import AccessPolicy
from bdurable.services.console.app import create_app
from bdurable.services.console.state import ConsoleState

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Console"]

log = structlog.get_logger("bdurable.console")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
SHUTDOWN_SECONDS = 5


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the role's ``Stopping`` (SIGTERM, SIGINT) decides."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, so that a busy port is an error of ours, with a clear message.

    The socket says it is TCP (``IPPROTO_TCP``), so asyncio turns Nagle's algorithm off on every accepted
    connection: a response's headers and body then go out at once, instead of the body waiting for the
    client's delayed ACK (40 ms per request on a kept-alive connection).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        # A port in use, an address that is not this machine's: the setting is wrong (CLI exit 2, as for the
        # roles' metrics endpoint).
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


class Console:
    """The web console of one prefix (``bdurable console``)."""

    def __init__(
        self, settings: Settings, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, read_only: bool = False
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port  # after start: the port really bound (port 0 picks a free one)
        self.policy = AccessPolicy(host, read_only=read_only, token=settings.console_token)
        self.state = ConsoleState(Client(settings=settings), self.policy, Metrics("console"))
        self.listening = asyncio.Event()  # set once it accepts connections
        self.connected = asyncio.Event()  # set once its client reached Redis (``/readyz`` answers 200)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '[::]') else host}:{self.port}"

    async def run(self, stopping: Stopping) -> None:
        structlog.contextvars.bind_contextvars(role="console", worker=new_worker_id("console"))
        sock = listen(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            create_app(self.state), lifespan="off", log_config=None, access_log=False, server_header=False,
            timeout_graceful_shutdown=SHUTDOWN_SECONDS, ws="none",
        )  # fmt: skip
        server = _Server(config)
        connecting = asyncio.create_task(self._connect(stopping))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started and not serving.done():  # noqa: ASYNC110  # uvicorn has a flag, not an event
                await asyncio.sleep(0.01)
            if serving.done():
                serving.result()  # raises what stopped it
            self.listening.set()
            mode = self.policy.why_read_only() or (
                "actions need the token" if self.policy.token else "actions allowed (loopback)"
            )
            log.info("console listening", url=self.url, mode=mode)
            stop = asyncio.create_task(stopping.event.wait())
            watched: set[asyncio.Task[object]] = {stop, serving, connecting}
            while not stop.done() and not serving.done():
                _, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if connecting.done() and not connecting.cancelled() and (error := connecting.exception()):
                    raise error  # not an outage (those are retried): e.g. another shard count, fatal
            stop.cancel()
        finally:
            connecting.cancel()
            self.state.close_streams()
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            sock.close()
            await self.state.client.close()
        log.info("console stopped")

    async def _connect(self, stopping: Stopping) -> None:
        """Connect the client, retrying until Redis answers (a console started before Redis waits for it)."""
        backoff = Backoff(None, stopping, first=0.1)  # its /livez answers from uvicorn's loop: no ticks to keep
        while not stopping.is_set:
            try:
                await self.state.client.connect()
            except REDIS_ERRORS as exc:
                log.warning("redis unavailable at start, retrying", error=str(exc), retry_in=backoff.delay)
                await backoff.wait()
                continue
            # what the console writes (events, inputs of starts): counted as every role counts its payloads
            self.state.metrics.registry.register(PayloadBytes(self.state.client.store.codec))
            self.state.connected = True
            self.connected.set()
            return
