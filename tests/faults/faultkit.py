"""Helpers of the fault suite: a fleet of real role processes to kill, and audits of what Redis holds.

Every test here runs the real ``bdurable`` role processes (``RoleProcesses`` of tests/support.py), hurts
them (SIGKILL, SIGSTOP, Redis restarts and outages, poison work, corrupt data), then audits Redis: every
workflow finished as its code says, each durable call committed once, each signal emitted once.

Figures each test measured are printed as ``FAULT-FIGURES <test> {json}`` lines (run with ``-s`` to see
them) and appended to the file named by ``BDURABLE_FAULT_FIGURES`` when it is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from support import APPS, RoleProcesses

from bdurable import Client, Settings
from bdurable.embedded import RedisServer
from bdurable.keys import Keys, ShardKeys

REPO = APPS.parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
FINISHED = {"COMPLETED", "FAILED", "CANCELLED"}


def report(test: str, figures: dict[str, Any]) -> None:
    """Print (and optionally append to a file) what a test measured."""
    line = f"FAULT-FIGURES {test} {json.dumps(figures, sort_keys=True, default=str)}"
    print(line)
    target = os.environ.get("BDURABLE_FAULT_FIGURES")
    if target:
        with Path(target).open("a", encoding="utf-8") as out:
            out.write(line + "\n")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of the line)


class Fleet:
    """Role processes of one prefix, started through the real CLI, killed and restarted at will."""

    def __init__(self, processes: RoleProcesses, *, app: str = "fault_app") -> None:
        self.processes = processes
        self.settings = processes.settings
        self.app = app
        self.dispatchers: list[subprocess.Popen[bytes]] = []
        self.roles: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: list[subprocess.Popen[bytes]] = []

    def dispatcher(self, *extra: str, concurrency: int = 20, **env: str) -> subprocess.Popen[bytes]:
        process = self.processes.start(
            "dispatcher", "--app", self.app, "--concurrency", str(concurrency), *extra, **env
        )
        self.dispatchers.append(process)
        return process

    def role(self, name: str, *extra: str, **env: str) -> subprocess.Popen[bytes]:
        process = self.processes.start(name, *extra, **env)
        self.roles[name] = process
        return process

    def support_roles(self) -> None:
        for name in ("scheduler", "reaper", "signal-bus"):
            self.role(name)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process (and its group): no drain, no goodbye, like a power cut."""
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        self.killed.append(process)
        if process in self.dispatchers:
            self.dispatchers.remove(process)

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 30) -> int:
        """SIGTERM: the role drains and leaves; returns its exit code."""
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=timeout)
        if process in self.dispatchers:
            self.dispatchers.remove(process)
        return code

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes.processes if p.poll() is None]

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        return self.processes.log_of(process)

    def events(self, starting: str) -> list[dict[str, Any]]:
        """Log events of every process of this fleet whose message starts with ``starting``."""
        return [
            e
            for p in self.processes.processes
            for e in self.log_events(p)
            if str(e.get("event", "")).startswith(starting)
        ]

    def log_events_matching(self, process: subprocess.Popen[bytes], starting: str) -> list[dict[str, Any]]:
        return [e for e in self.log_events(process) if str(e.get("event", "")).startswith(starting)]

    def log_events(self, process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
        """The JSON log lines of a process (other lines, e.g. a crash point's note, are skipped)."""
        events = []
        for line in self.log_of(process).splitlines():
            with suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    events.append(value)
        return events


@dataclass
class OwnRedis:
    """A Redis server of the test's own (to kill, restart or freeze), with a fleet and clients on it."""

    server: RedisServer
    settings: Settings
    fleet: Fleet
    client: Client
    raw: aioredis.Redis

    def freeze(self) -> None:
        assert self.server.process is not None
        os.kill(self.server.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.server.process is not None
        os.kill(self.server.process.pid, signal.SIGCONT)


def shard(prefix: str) -> ShardKeys:
    """The keys of the single shard the fault suite runs on."""
    return Keys(prefix).shard(0)


def fx(prefix: str, name: str) -> str:
    return f"{prefix}:fx:{name}"


@dataclass
class Audit:
    """What Redis holds about one workflow, and every violation of the exactly-once guarantees found."""

    workflow_id: str
    status: str | None
    output: Any
    error: Any
    calls: dict[int, dict[str, Any]]  # seq -> {"rec": record, "s": status}
    inbox: list[dict[str, Any]]
    signals: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)

    def kinds(self, kind: str) -> list[int]:
        return sorted(seq for seq, call in self.calls.items() if call["rec"].get("k") == kind)


async def audit(r: aioredis.Redis, prefix: str, workflow_id: str) -> Audit:
    """Read one workflow's hash, call records, inbox and signal log, and check them against each other.

    Checked: every inbox entry and signal record is JSON; no seq has two results in the inbox; every call
    that is 'done' or 'failed' has exactly one inbox entry (signals have none: their log entry is their
    commit); no signal seq appears twice in the signal log, and every signal call has one log entry.
    """
    t = shard(prefix)
    async with r.pipeline(transaction=False) as pipe:
        pipe.hgetall(t.wf(workflow_id))
        pipe.hgetall(t.calls(workflow_id))
        pipe.lrange(t.inbox(workflow_id), 0, -1)
        pipe.lrange(t.signals(workflow_id), 0, -1)
        wf, raw_calls, raw_inbox, raw_signals = await pipe.execute()
    problems: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for key, value in raw_calls.items():
        if key.isdigit():
            try:
                record = json.loads(value)
            except ValueError:
                problems.append(f"call #{key} record is not JSON: {value[:60]!r}")
                record = {}
            calls[int(key)] = {"rec": record, "s": raw_calls.get(f"{key}:s")}
    inbox: list[dict[str, Any]] = []
    for entry in raw_inbox:
        try:
            inbox.append(json.loads(entry))
        except ValueError:
            problems.append(f"inbox entry is not JSON: {entry[:60]!r}")
    signals = [json.loads(s) for s in raw_signals]
    per_seq = Counter(e["seq"] for e in inbox if "seq" in e)
    problems += [f"call #{seq} has {n} results in the inbox" for seq, n in per_seq.items() if n > 1]
    for seq, call in calls.items():
        kind = call["rec"].get("k")
        if kind in ("value", "signal"):
            continue
        if call["s"] in ("done", "failed") and per_seq.get(seq, 0) != 1:
            problems.append(f"call #{seq} ({kind}) is {call['s']} with {per_seq.get(seq, 0)} inbox entries")
    signal_seqs = Counter(s["seq"] for s in signals)
    problems += [f"signal #{seq} is in the signal log {n} times" for seq, n in signal_seqs.items() if n > 1]
    for seq in (s for s, c in calls.items() if c["rec"].get("k") == "signal"):
        if signal_seqs.get(seq, 0) != 1:
            problems.append(f"signal call #{seq} has {signal_seqs.get(seq, 0)} signal log entries")
    return Audit(
        workflow_id=workflow_id,
        status=wf.get("status"),
        output=json.loads(wf["output"]) if wf.get("output") else None,
        error=json.loads(wf["error"]) if wf.get("error") else None,
        calls=calls,
        inbox=inbox,
        signals=signals,
        problems=problems,
    )


async def text_hash(r: aioredis.Redis, key: str) -> dict[str, str]:
    """HGETALL on a client that decodes responses."""
    return cast(dict[str, str], await r.hgetall(key))


async def counts(r: aioredis.Redis, prefix: str, name: str) -> dict[str, int]:
    """A counter hash of the fault app (``runs``, ``final_runs``) as ints."""
    return {k: int(v) for k, v in (await text_hash(r, fx(prefix, name))).items()}


async def held_by(r: aioredis.Redis, prefix: str, pid: int) -> dict[str, str]:
    """Items (-> lease) in the processing hash of the dispatcher process ``pid`` (claimed, not committed)."""
    held: dict[str, str] = {}
    async for key in r.scan_iter(match=shard(prefix).processing(f"dispatcher-*-{pid}-*")):
        held.update(await text_hash(r, key))
    return held


def scrape(port: int, metric: str) -> float:
    """A metric's value (summed over labels) from a role's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(metric) and not line.startswith("#") and line[len(metric)] in " {"
    )


async def audit_all(r: aioredis.Redis, prefix: str, ids: Iterable[str]) -> list[Audit]:
    """``audit`` of many workflows, a few at a time (a client's connection pool is bounded)."""
    limit = asyncio.Semaphore(16)

    async def one(workflow_id: str) -> Audit:
        async with limit:
            return await audit(r, prefix, workflow_id)

    return list(await asyncio.gather(*(one(wf) for wf in ids)))


async def statuses(r: aioredis.Redis, prefix: str, ids: Iterable[str]) -> dict[str, str | None]:
    ids = list(ids)
    t = shard(prefix)
    async with r.pipeline(transaction=False) as pipe:
        for workflow_id in ids:
            pipe.hget(t.wf(workflow_id), "status")
        values = await pipe.execute()
    return dict(zip(ids, values, strict=True))


async def wait_finished(
    r: aioredis.Redis, prefix: str, ids: Iterable[str], timeout: float, interval: float = 0.25
) -> dict[str, str | None]:
    """Poll until every workflow is finished; returns the statuses (unfinished ones too, at the deadline)."""
    ids = list(ids)
    deadline = time.monotonic() + timeout
    while True:
        found = await statuses(r, prefix, ids)
        if all(s in FINISHED for s in found.values()) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(interval)


async def leftovers(r: aioredis.Redis, prefix: str) -> dict[str, int]:
    """Engine work that should be gone once every workflow finished: ready items, timers, held items, tasks,
    and flow control's permits, workflow slots, held-back calls and queued runs."""
    t = shard(prefix)
    found: dict[str, int] = {}
    async for key in r.scan_iter(match=f"{t.tag}:*", count=1000):
        entry = ShardKeys.entry_of(key[len(t.tag) :])
        if entry in ("permits", "slots", "held", "slot_queue", "permit_of"):
            size = await (
                r.hlen(key) if entry == "permit_of" else r.scard(key) if entry in ("permits", "slots") else r.zcard(key)
            )
            if size:
                found[key] = size
            continue
        if entry in ("task_queue", "step_queue", "task", "processing", "bus_forward"):
            key_type = await r.type(key)
            if key_type not in ("list", "hash"):
                continue  # e.g. the signal bus's lease zset
            size = await (r.llen(key) if key_type == "list" else r.hlen(key))
            if size:
                found[key] = size
    timers = await r.zcard(t.timers)
    if timers:
        found[t.timers] = timers
    return found


async def snapshot(url: str, prefix: str) -> dict[str, tuple[Any, ...]]:
    """Every key of the prefix (engine keys and the suite's own): type, whether it has a TTL, and its exact
    content in bytes (fields, members and scores, elements in order).

    Compared logically rather than as DUMP payloads: a DUMP of a hash, set or sorted set lists entries in
    hash-table order, which Redis changes when a mere read advances its incremental rehashing.
    """
    client = aioredis.Redis.from_url(url)  # bytes in, bytes out
    try:
        found: dict[str, tuple[Any, ...]] = {}
        async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            kind = cast(bytes, await client.type(key)).decode()
            if kind == "string":
                content: Any = await client.get(key)
            elif kind == "hash":
                content = sorted((await client.hgetall(key)).items())
            elif kind == "list":
                content = await client.lrange(key, 0, -1)
            elif kind == "set":
                content = sorted(await client.smembers(key))
            elif kind == "zset":
                content = sorted(await client.zrange(key, 0, -1, withscores=True))
            else:
                content = await client.dump(key)
            found[key.decode(errors="replace")] = (kind, await client.pttl(key) > 0, content)
        return found
    finally:
        await client.aclose()
