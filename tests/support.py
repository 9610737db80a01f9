"""Test helpers shared by the suites: role runners and polling with a deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from bdurable import Client, Settings, Worker
from bdurable.limits import limit_id
from bdurable.wire import WorkItem

TESTS = Path(__file__).parent
APPS = TESTS / "apps"

T = TypeVar("T")


class InProcessRoles:
    """Each role a ``bdurable.Worker`` of its own in the test's own loop (fast feedback), started in the background:
    ``roles.dispatcher(app)`` returns at once, the worker serves a moment later.

    End-to-end tests use real processes (``RoleProcesses``); these are for the programming model. Read what a
    role did with ``worker.sample(metric, **labels)``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.starting: dict[Worker, asyncio.Task[None]] = {}  # each worker and the task that starts it
        self._bus_started = False

    def dispatcher(self, *modules: Any, with_bus: bool = True, **options: Any) -> Worker:
        dispatcher = self._start(Worker(modules, settings=self.settings, roles=("dispatcher",), **options))
        if with_bus and self.settings.shards > 1 and not self._bus_started:
            # With several shards the signal bus carries cross-shard operations (a child in another
            # shard): a deployment always runs one, so the tests of the programming model do too.
            self._bus_started = True
            self.signal_bus()
        return dispatcher

    def scheduler(self) -> Worker:
        return self._start(Worker(settings=self.settings, roles=("scheduler",)))

    def signal_bus(self) -> Worker:
        return self._start(Worker(settings=self.settings, roles=("signal_bus",)))

    def reaper(self) -> Worker:
        return self._start(Worker(settings=self.settings, roles=("reaper",)))

    def _start(self, worker: Worker) -> Worker:
        self.starting[worker] = asyncio.create_task(worker.start())
        return worker

    async def stop(self, worker: Worker) -> None:
        """Stop one worker as SIGTERM stops a process (a dispatcher drains); a role that failed to start raises."""
        starting = self.starting.pop(worker, None)
        if starting is None:  # stopped already
            return
        if not starting.done():
            starting.cancel()  # not serving yet: start() stops what it started as it unwinds
            await asyncio.wait([starting])
            return
        starting.result()
        await worker.stop(timeout=30)

    async def stop_all(self) -> None:
        workers = list(self.starting)
        await asyncio.gather(*(self.stop(worker) for worker in workers), return_exceptions=True)


class RoleProcesses:
    """Role processes started with the real ``bdurable`` CLI; every one is killed at teardown."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BDURABLE_REDIS_URL=self.settings.redis_url,
            BDURABLE_PREFIX=self.settings.prefix,
            BDURABLE_HEARTBEAT_INTERVAL=str(self.settings.heartbeat_interval),
            BDURABLE_HEARTBEAT_TIMEOUT=str(self.settings.heartbeat_timeout),
            BDURABLE_RETENTION=str(self.settings.retention),
            BDURABLE_SHARDS=str(self.settings.shards),
            BDURABLE_LOG_FORMAT="json",
            BDURABLE_METRICS_HOST="127.0.0.1",  # test servers listen on loopback only
            PYTHONPATH=os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")]),
        )
        env.update(extra)
        return env

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{args[0]}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "bdurable.cli", *args],
            env=self.env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        return process

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        index = self.processes.index(process)
        name = process.args[3] if isinstance(process.args, list) else "role"  # type: ignore[index]
        return (self.tmp_path / f"{name}-{index}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def token() -> str:
    """A unique value, to tell one test's calls and side effects from another's."""
    return uuid.uuid4().hex


async def status_is(client: Client, workflow_id: str, *statuses: str) -> bool:
    """Whether the workflow exists and is in one of ``statuses`` (for ``eventually``)."""
    state = await client.get_state(workflow_id)
    return state is not None and state.status in statuses


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result, or ``TimeoutError`` after ``seconds``: ``asyncio.wait_for`` without Python 3.11's
    flaw (a cancel that lands as the awaited work completes is lost; see ``bdurable.resp``)."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Await ``check()`` (sync or async) until it returns a truthy value; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    from bdurable.embedded import free_port, port_is_free

    while True:
        port = free_port()
        if port < 55000 and port_is_free(port + 10000):
            return port


class LocalCluster:
    """A real 3-master Redis Cluster on loopback: three server processes (``bdurable.embedded``), slots set here."""

    def __init__(self, masters: int = 3) -> None:
        from bdurable.embedded import RedisServer

        self.nodes = [
            RedisServer(port=_cluster_port(), extra=["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> LocalCluster:
        import redis

        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=node.port, decode_responses=True) for node in self.nodes]
        try:
            per_node = 16384 // len(self.nodes)
            for index, client in enumerate(clients):
                first = index * per_node
                last = 16383 if index == len(clients) - 1 else first + per_node - 1
                client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        finally:
            for client in clients:
                client.close()
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every node says the cluster is ok and knows every other (after a start, or a node's outage)."""
        import redis

        clients = [redis.Redis(port=node.port, decode_responses=True) for node in self.nodes]
        try:
            deadline = time.monotonic() + timeout
            while not all(
                c.cluster("info")["cluster_state"] == "ok"
                and int(c.cluster("info")["cluster_known_nodes"]) == len(self.nodes)
                for c in clients
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError("the test cluster did not converge")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def held_by_dispatchers(client: Client, task: str) -> tuple[int, int]:
    """One atomic snapshot (MULTI) of the limit's shard: (attempts of ``task`` the dispatchers' processing hashes
    hold, permits of its limit). The test's own view of what runs, independent of the tasks' counts."""
    ident = limit_id("t", task, "")
    shard = client.keys.shard(client.keys.shard_of(ident))
    redis = client.store.redis
    workers = [str(w) for w in await redis.zrange(shard.workers, 0, -1)]
    async with redis.pipeline(transaction=True) as pipe:
        for worker in workers:
            pipe.hkeys(shard.processing(worker))
        pipe.hgetall(shard.permit_of)
        pipe.scard(shard.permits(ident))
        *held, permit_of, permits = await pipe.execute()
    items = [item for keys in held for item in keys if WorkItem.decode(item).kind == "l"]
    return sum(1 for item in items if permit_of.get(item) == ident), int(permits)


class HeldSampler:
    """Samples, every 5 ms while it runs (``async with``), the most attempts of ``task`` the dispatchers hold at
    once, as Redis shows it (``held_by_dispatchers``): ``samples`` then says whether a limit ever gave way."""

    def __init__(self, client: Client, task: str) -> None:
        self.client, self.task = client, task
        self.samples: list[int] = []
        self._running: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.samples.append(max(await held_by_dispatchers(self.client, self.task)))
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> HeldSampler:
        self._running = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
