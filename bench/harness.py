"""Start Redis (one server or a 3-node cluster) and role processes for a benchmark; read Redis's own figures.

Roles run as separate processes (multiprocessing ``spawn``, each a ``bdurable.Worker`` of one role), as in
production: their heap settled as the role commands settle it (``bdurable.runtime.heap``; ``heap="default"``
leaves it), logging JSON at ``warning`` to ``bench/results/logs/`` (``log_level`` changes that). A role can
run under cProfile (``profile=PATH``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import os
import re
import signal
import sys
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bdurable import Settings
from bdurable.embedded import RedisServer

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"  # gitignored: logs and profiles of the last run
LOGS = RESULTS / "logs"


def _run_on(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run on the event loop a role process would use (``BDURABLE_EVENT_LOOP``). Not ``run_event_loop`` of
    ``bdurable.runtime.service``: benchmarks run roles through the public surface only (tests/test_structure.py)."""
    if event_loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def _run_role(role: str, settings: Settings, options: dict[str, Any], log_path: str, profile: str | None) -> None:
    """One role as a ``bdurable.Worker`` of this (spawned) process until SIGTERM or SIGINT, when it drains."""
    sys.path.insert(0, str(BENCH))
    import bench_app

    from bdurable import Worker
    from bdurable.runtime.heap import settle_heap
    from bdurable.runtime.logging import configure_logging

    options = dict(options)
    settled = options.pop("heap", "settled") == "settled"  # "default": CPython's collector settings, unfrozen
    if options.pop("json", None) == "stdlib":  # the JSON accelerator off (bench/run.py measures it on and off)
        from bdurable import codec

        codec.ACCELERATED = False
    collector = _time_collections()
    stream = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    configure_logging(level=options.pop("log_level", "warning"), fmt="json", stream=stream)
    worker = Worker([bench_app], settings=settings, roles=(role.replace("-", "_"),), **options)
    if settled:  # as the role commands do (bdurable.runtime.heap)
        settle_heap()

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        async with worker:
            await stopping.wait()

    try:
        if profile is None:
            _run_on(serve(), settings.event_loop)
            return
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            _run_on(serve(), settings.event_loop)
        finally:
            profiler.disable()
            profiler.dump_stats(profile)
    finally:
        Path(collector_file(log_path)).write_text(json.dumps(collector))


def collector_file(log_path: str) -> str:
    """Where a role process leaves the time its garbage collector took (written when it exits)."""
    return log_path + ".gc.json"


def _time_collections() -> dict[str, float]:
    """Time this process's garbage collections from now on: total seconds, count, longest pause (s)."""
    totals = {"seconds": 0.0, "collections": 0, "longest": 0.0}
    began = [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        took = time.perf_counter() - began[0]
        totals["seconds"] += took
        totals["collections"] += 1
        totals["longest"] = max(totals["longest"], took)

    gc.callbacks.append(timed)
    return totals


@contextmanager
def redis(appendfsync: str = "everysec") -> Iterator[RedisServer]:
    with RedisServer(appendfsync=appendfsync) as server:
        yield server


@contextmanager
def cluster() -> Iterator[Any]:
    """The test suite's 3-master Redis Cluster on loopback (AOF everysec on every node)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support import LocalCluster  # type: ignore[import-not-found]  # tests/, on sys.path just above

    nodes = LocalCluster().start()
    try:
        yield nodes
    finally:
        nodes.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Roles(list[Any]):
    """The role processes of one ``roles()`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.log_paths: list[str] = []

    def collector(self) -> dict[str, float]:
        """The garbage collector's time in these processes over their lives: total seconds, collections,
        longest pause in seconds (once they exited; zeros for a process that left no figures)."""
        totals = {"seconds": 0.0, "collections": 0.0, "longest": 0.0}
        for log_path in self.log_paths:
            try:
                figures = json.loads(Path(collector_file(log_path)).read_text())
            except (FileNotFoundError, ValueError):
                continue
            totals["seconds"] += figures["seconds"]
            totals["collections"] += figures["collections"]
            totals["longest"] = max(totals["longest"], figures["longest"])
        return totals

    def pause(self) -> None:
        for process in self:
            os.kill(process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        for process in self:
            os.kill(process.pid, signal.SIGCONT)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(process.pid) for process in self)


_counter = 0


@contextmanager
def roles(
    settings: Settings, *names: str, profile: str | None = None, count: int = 1, **options: Any
) -> Iterator[Roles]:
    """Start role processes (``count`` of each name); SIGTERM (a drained stop) when the block ends."""
    global _counter
    LOGS.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    processes = Roles()
    for name in names:
        for _ in range(count):
            _counter += 1
            log_path = str(LOGS / f"{settings.prefix}-{name}-{_counter}.log")
            role_options = options if name == "dispatcher" else {"log_level": options.get("log_level", "warning")}
            process = context.Process(
                target=_run_role,
                args=(name, settings, role_options, log_path, profile if name == "dispatcher" else None),
            )
            process.start()
            processes.append(process)
            processes.log_paths.append(log_path)
    try:
        yield processes
    finally:
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join(5)


# -- Redis's own figures ------------------------------------------------------------------------------------


def lua_commands() -> frozenset[str]:
    """Every command b-durable's scripts call: the rest of INFO commandstats is sent by clients."""
    from bdurable.lua import load_library

    source = load_library().source  # the .lua files and what is generated around them (the clock reads TIME)
    return frozenset(m.lower() for m in re.findall(r"redis\.p?call\(\s*['\"]([A-Za-z]+)['\"]", source))


LUA_COMMANDS = lua_commands()
OWN_COMMANDS = frozenset({"info"})  # what the benchmark itself sends to read the figures


@dataclass
class Snapshot:
    calls: dict[str, int] = field(default_factory=dict)
    usec: dict[str, int] = field(default_factory=dict)
    reads: int = 0
    commands: int = 0
    cpu: float = 0.0
    used_memory: int = 0
    forks: int = 0
    at: float = 0.0

    def __sub__(self, before: Snapshot) -> Delta:
        names = set(self.calls) | set(before.calls)
        calls = {n: self.calls.get(n, 0) - before.calls.get(n, 0) for n in names}
        usec = {n: self.usec.get(n, 0) - before.usec.get(n, 0) for n in names}
        return Delta(
            calls={n: c for n, c in calls.items() if c},
            usec=usec,
            reads=self.reads - before.reads,
            commands=self.commands - before.commands,
            cpu=self.cpu - before.cpu,
            memory=self.used_memory - before.used_memory,
            forks=self.forks - before.forks,
            seconds=self.at - before.at,
        )


@dataclass
class Delta:
    calls: dict[str, int]
    usec: dict[str, int]
    reads: int  # socket read events: one per round trip (a pipeline is one), however many commands
    commands: int  # every command executed, those run inside scripts included
    cpu: float  # Redis's own CPU seconds (user + system), summed over the nodes
    memory: int
    forks: int  # AOF rewrites (a forked child competing for the cores) during the interval
    seconds: float

    @property
    def top_level(self) -> int:
        """Commands sent by clients: script calls, blocking reads, pub/sub... (never those scripts run)."""
        return sum(c for n, c in self.calls.items() if n not in LUA_COMMANDS and n not in OWN_COMMANDS)

    @property
    def script_calls(self) -> int:
        return sum(self.calls.get(name, 0) for name in SCRIPT_COMMANDS)

    @property
    def script_usec(self) -> int:
        return sum(self.usec.get(name, 0) for name in SCRIPT_COMMANDS)


SCRIPT_COMMANDS = ("fcall", "evalsha", "eval")  # the library's functions, or the scripts sent whole
INFO_SECTIONS = ("commandstats", "stats", "cpu", "memory")  # a snapshot's own round trips, per node


async def snapshot(nodes: list[aioredis.Redis]) -> Snapshot:
    """INFO of every node (one server, or each cluster master), summed."""
    total = Snapshot(at=time.perf_counter())

    async def read_info(node: aioredis.Redis) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for section in INFO_SECTIONS:  # one each: Redis 6.2 takes only one
            merged.update(await node.info(section))
        return merged

    infos = await asyncio.gather(*(read_info(n) for n in nodes))
    for info in infos:
        for key, value in info.items():
            if key.startswith("cmdstat_"):
                name = key[8:]
                total.calls[name] = total.calls.get(name, 0) + int(value["calls"])
                total.usec[name] = total.usec.get(name, 0) + int(value["usec"])
        total.reads += int(info["total_reads_processed"])
        total.commands += int(info["total_commands_processed"])
        total.cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        total.used_memory += int(info["used_memory"])
        total.forks += int(info.get("total_forks", 0))
    total.at = time.perf_counter()
    return total


async def settle(nodes: list[aioredis.Redis], rewrite_above: int = 16 * 2**20) -> None:
    """Rewrite a grown AOF now and wait for it, so that no automatic rewrite (a fork) lands in a measure."""
    for node in nodes:
        info = await node.info("persistence")
        if int(info.get("aof_current_size", 0)) > rewrite_above and not int(info["aof_rewrite_in_progress"]):
            await node.bgrewriteaof()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        infos = [await node.info("persistence") for node in nodes]
        if not any(int(i["aof_rewrite_in_progress"]) or int(i["aof_rewrite_scheduled"]) for i in infos):
            return
        await asyncio.sleep(0.1)


def node_clients(urls: list[str]) -> list[aioredis.Redis]:
    return [aioredis.from_url(url, decode_responses=True) for url in urls]


async def command_count(redis: Any) -> int:
    """Commands clients sent to Redis so far (INFO commandstats, without those scripts run)."""
    snap = await snapshot([redis])
    return sum(c for n, c in snap.calls.items() if n not in LUA_COMMANDS and n not in OWN_COMMANDS)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
