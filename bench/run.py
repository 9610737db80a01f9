"""b-durable benchmarks: ``python bench/run.py`` measures everything, prints a table, writes docs/performance.md.

Every figure comes from one run on this machine against local redis-servers with AOF ``everysec`` (one
server; a 3-master cluster for the scale rows); none is a timed test. Roles run as separate processes, as
in production. The peers (saq, arq) are installed by this script into ``bench/.peers-venv`` (pip, PyPI)
and measured against the same Redis server in the same run. ``--quick`` runs everything smaller (a
smoke test of the benchmark itself; its figures are noisier).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import os
import platform
import pstats
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_app
import bench_memory
import redis as redis_py
from harness import (
    BENCH,
    INFO_SECTIONS,
    RESULTS,
    ROOT,
    Delta,
    Timer,
    cluster,
    node_clients,
    percentile,
    redis,
    roles,
    settle,
    snapshot,
)
from peers import PINS

from bdurable import Client, Settings

PEERS_VENV = BENCH / ".peers-venv"
DOC = ROOT / "docs" / "performance.md"
DBOS_WORKFLOWS_PER_S = (60, 80)  # the issue author's figures: DBOS on PostgreSQL, three-step workflows
DBOS_P50_MS = (14, 18)


# -- the table --------------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    value: str
    versus: str = ""  # ratio against the limit or a peer, and the target
    verdict: str = ""  # "holds", "MISSES", or "" (a reference figure)
    note: str = ""


@dataclass
class Report:
    sections: list[tuple[str, list[Row]]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def section(self, title: str) -> list[Row]:
        rows: list[Row] = []
        self.sections.append((title, rows))
        return rows


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def median_run(runs: list[dict[str, float]], by: str = "per_s") -> dict[str, float] | None:
    """The run with the median figure ``by`` (all its figures together), or None if there was none."""
    if not runs:
        return None
    return sorted(runs, key=lambda r: r[by])[(len(runs) - 1) // 2]


def latency_rounds(report: Report, name: str) -> str:
    p50s = report.extra.get("latency_rounds", {}).get(name, [])
    if len(p50s) < 2:
        return ""
    return f"; median of {len(p50s)} interleaved rounds (p50s: {', '.join(f'{v:.2f}' for v in p50s)})"


def spread(report: Report, name: str) -> str:
    low, high = report.extra.get("spread", {}).get(name, (0, 0))
    return f"; median of {report.extra.get('repeat', 1)} runs ({fmt(low)}-{fmt(high)})" if high > low else ""


def disturbed(figures: dict[str, float]) -> str:
    rewrites = int(figures.get("aof_rewrites", 0))
    text = f"; {rewrites} AOF rewrite(s) forked during the drain" if rewrites else ""
    return text + f"; other processes {figures.get('others_cpu', 0):.0%} of a core"


def verdict(ok: bool) -> str:
    return "holds" if ok else "MISSES"


# -- helpers ----------------------------------------------------------------------------------------------


def settings_for(url: str, **overrides: Any) -> Settings:
    return Settings(redis_url=url, prefix=f"b{uuid.uuid4().hex[:8]}", **overrides)


async def registered(client: Client, name: str, dispatchers: int = 1, timeout: float = 60) -> None:
    """Wait until ``dispatchers`` dispatchers advertise the workflow as live (in shard 0)."""
    deadline = time.monotonic() + timeout
    key = client.keys.shard(0).live(name)
    while await client.store.redis.zcard(key) < dispatchers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dispatchers} dispatcher(s) did not register {name} within {timeout}s")
        await asyncio.sleep(0.05)


async def count_status(client: Client, status: str) -> int:
    return (await client.reads.counts())[status]


async def start_many(client: Client, workflow: Any, inputs: list[Any]) -> list[str]:
    # On a cluster every script call is its own request on a connection of its node, and redis-py's async
    # cluster client fails (MaxConnectionsError) beyond 100 connections per node: start fewer at once.
    size = 50 if client.store.cluster else 500
    ids: list[str] = []
    for chunk in range(0, len(inputs), size):
        handles = await asyncio.gather(*(client.start(workflow, value) for value in inputs[chunk : chunk + size]))
        ids += [h.workflow_id for h in handles]
    return ids


async def until(check: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(interval)


# -- 0. the limits -------------------------------------------------------------------------------------------


async def client_limits(url: str, count: int) -> dict[str, float]:
    """One Python process with redis-py asyncio: sequential, 64 in flight, pipelines of 32."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(url, max_connections=128)
    try:

        async def worker(n: int) -> None:
            for _ in range(n):
                await r.ping()

        await asyncio.gather(*(worker(5) for _ in range(64)))  # 64 connections open before timing
        with Timer() as sequential:
            for _ in range(count):
                await r.ping()
        with Timer() as in_flight:
            await asyncio.gather(*(worker(count * 2 // 64) for _ in range(64)))
        with Timer() as pipelined:
            for _ in range(count * 4 // 32):
                async with r.pipeline(transaction=False) as pipe:
                    for _ in range(32):
                        pipe.ping()
                    await pipe.execute()
    finally:
        await r.aclose()
    return {
        "sequential": count / sequential.seconds,
        "in_flight_64": (count * 2 // 64 * 64) / in_flight.seconds,
        "pipelined_32": (count * 4 // 32 * 32) / pipelined.seconds,
    }


IDLE_GAP = 0.01  # between the calls of the "after idle" figures: about the gap between a quiet system's hops
COLD_SCRIPT = "local s = 0 for i = 1, 2000 do s = s + i end redis.call('SET', KEYS[1], s) return s"


async def idle_penalty(url: str, count: int) -> dict[str, float]:
    """The same work back to back and after ``IDLE_GAP`` of idleness: a round trip as Python sees it, and a
    small script's time inside Redis (INFO commandstats). A quiet system's workflow pays the idle figure at
    every hop; a busy one the back-to-back figure (this is why idle latency is no per-item cost times hops)."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    figures: dict[str, float] = {}
    try:
        sha = await r.script_load(COLD_SCRIPT)
        for label, gap in (("warm", 0.0), ("idle", IDLE_GAP)):
            await r.config_resetstat()
            trips: list[float] = []
            for _ in range(count):
                if gap:
                    await asyncio.sleep(gap)
                start = time.perf_counter()
                await r.ping()
                trips.append((time.perf_counter() - start) * 1000)
                if gap:
                    await asyncio.sleep(gap)
                await r.evalsha(sha, 1, "bench:idle-penalty")
            stats = await r.info("commandstats")
            figures[f"script_us_{label}"] = float(stats["cmdstat_evalsha"]["usec_per_call"])
            figures[f"round_trip_ms_{label}"] = percentile(trips, 50)
        await r.delete("bench:idle-penalty")
    finally:
        await r.aclose()
    return figures


def server_limits(port: int, requests: int) -> dict[str, float]:
    """The server answering a small Lua script (EVALSHA), 50 connections, unpipelined and in pipelines of 32."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {}
    client = redis_py.Redis(port=port, decode_responses=True)
    sha = client.script_load("return redis.call('INCR', KEYS[1])")
    client.close()
    figures = {}
    for label, extra in (("unpipelined", []), ("pipelined_32", ["-P", "32"])):
        out = subprocess.run(
            [binary, "-p", str(port), "-n", str(requests), "-c", "50", *extra, "--csv", "EVALSHA", sha, "1", "bench:k"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        rows = [line for line in out.splitlines() if line.startswith('"EVALSHA')]
        figures[label] = float(rows[-1].split(",")[1].strip('"')) if rows else float("nan")
    return figures


# -- 1, 2, 6. throughput, round trips, scale -------------------------------------------------------------


DRAIN_WARM_UP = 50  # workflows each dispatcher runs before a drain is timed (connections, caches, the library)


async def drain(
    settings: Settings,
    node_urls: list[str],
    workflow: Any,
    tasks_per_workflow: int,
    count: int,
    concurrency: int,
    dispatchers: int = 1,
    profile: str | None = None,
    **options: Any,
) -> dict[str, float]:
    """Dispatchers (warmed up, then paused) drain ``count`` queued workflows; timed from their resumption.
    ``options``: more options of the dispatcher processes (see ``harness.roles``)."""
    nodes = node_clients(node_urls)
    async with Client(settings=settings) as client:
        with (
            roles(settings, "scheduler"),
            roles(
                settings, "dispatcher", count=dispatchers, concurrency=concurrency, profile=profile, **options
            ) as running,
        ):
            await registered(client, workflow.name, dispatchers)
            warm = await asyncio.gather(*(client.start(workflow, i) for i in range(DRAIN_WARM_UP)))
            await asyncio.gather(*(h.result(timeout=60) for h in warm))
            base = await count_status(client, "COMPLETED")
            await settle(nodes)
            running.pause()
            await start_many(client, workflow, list(range(count)))
            before, cpu_before, machine_before = await snapshot(nodes), running.cpu_seconds(), machine_cpu()
            running.resume()
            polls = 0
            with Timer() as timer:
                while await count_status(client, "COMPLETED") < base + count:
                    polls += 1
                    await asyncio.sleep(0.01)
            after, cpu_after, machine_after = await snapshot(nodes), running.cpu_seconds(), machine_cpu()
    for node in nodes:
        await node.aclose()
    collector = running.collector()  # over the dispatchers' lives: start, warm-up, the drain, the stop
    delta: Delta = after - before
    steps = count * (tasks_per_workflow + 1)
    items = steps + count * tasks_per_workflow  # workflow steps + task attempts: each is a claim and a commit
    own_reads = (polls + 1) * settings.shards + len(INFO_SECTIONS) * len(node_urls)  # our zcard polls and INFO
    seconds = timer.seconds
    figures = {
        "per_s": count / seconds,
        "items_per_s": items / seconds,
        "seconds": seconds,
        "round_trips_per_item": (delta.reads - own_reads) / items,
        "commands_per_item": delta.top_level / items,
        "script_calls_per_item": delta.script_calls / items,
        "inner_commands_per_item": (delta.commands - delta.top_level - delta.calls.get("info", 0)) / items,
        "usec_per_script": delta.script_usec / max(1, delta.script_calls),
        "lua_share": delta.script_usec / 1e6 / seconds,
        "redis_cpu": delta.cpu / seconds,
        "dispatcher_cpu": (cpu_after - cpu_before) / seconds,
        "aof_rewrites": delta.forks,
        "machine_cpu": (machine_after[0] - machine_before[0]) / max(1, machine_after[1] - machine_before[1]),
        "gc_us_per_workflow": collector["seconds"] / (count + DRAIN_WARM_UP) * 1e6,  # the drain and the warm-up
        "gc_longest_ms": collector["longest"] * 1000,
    }
    # Cores used by everything else (the scheduler and the benchmark's polling: a few %; more is other work).
    figures["others_cpu"] = (
        figures["machine_cpu"] * (os.cpu_count() or 1) - figures["redis_cpu"] - figures["dispatcher_cpu"]
    )
    return figures


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# -- 3. latency on an idle system ---------------------------------------------------------------------------


async def latency(settings: Settings, count: int) -> dict[str, float]:
    """Start-to-result of a single-task workflow, one at a time (started by definition, and by name)."""
    nodes = node_clients([settings.redis_url])
    async with Client(settings=settings) as client:
        with roles(settings, "dispatcher", "scheduler"):
            await registered(client, "one_task")
            samples: list[float] = []
            by_name: list[float] = []
            for i in range(count + 10):
                if i == 10:
                    before = await snapshot(nodes)
                await asyncio.sleep(0.002 * (i % 5))  # vary the phase against the roles' loops
                start = time.perf_counter()
                handle = await client.start(bench_app.one_task, i)
                await handle.result(timeout=10)
                samples.append((time.perf_counter() - start) * 1000)
            delta = await snapshot(nodes) - before
            for i in range(count // 4 + 10):
                await asyncio.sleep(0.002 * (i % 5))
                start = time.perf_counter()
                handle = await client.start("one_task", i)
                await handle.result(timeout=10)
                by_name.append((time.perf_counter() - start) * 1000)
    await nodes[0].aclose()
    samples, by_name = samples[10:], by_name[10:]
    return {
        "round_trips": (delta.reads - len(INFO_SECTIONS)) / count,
        "commands": delta.top_level / count,
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "max_ms": max(samples),
        "by_name_p50_ms": percentile(by_name, 50),
    }


async def timer_lag(settings: Settings, count: int, sleep_ms: int) -> dict[str, float]:
    """How late durable timers fire after their due time, and when the workflow has resumed (Redis clock, ms)."""
    async with Client(settings=settings) as client:
        with roles(settings, "dispatcher", "scheduler"):
            await registered(client, "sleeper")
            fired: list[float] = []
            resumed: list[float] = []
            redis_ = client.store.redis
            for i in range(count):
                handle = await client.start(bench_app.sleeper, sleep_ms)
                await handle.result(timeout=10)
                shard = client.keys.for_workflow(handle.workflow_id)
                calls: dict[str, str] = await redis_.hgetall(shard.calls(handle.workflow_id))  # type: ignore[assignment]
                finished = int(await redis_.hget(shard.wf(handle.workflow_id), "finished_at") or 0)
                seq = next(k for k in calls if k.isdigit())
                due = int(calls[f"{seq}:t"]) + sleep_ms
                fired.append(int(calls[f"{seq}:f"]) - due)
                resumed.append(finished - due)
                await asyncio.sleep(0.007 * (i % 5))  # vary the phase against the scheduler
    return {
        "p50_ms": percentile(fired, 50),
        "p99_ms": percentile(fired, 99),
        "max_ms": max(fired),
        "resumed_p50_ms": percentile(resumed, 50),
        "resumed_p99_ms": percentile(resumed, 99),
    }


def bus_bench(quick: bool) -> list[tuple[str, str, str]] | str:
    """Run bench/bench_bus.py (another engineer's) if it exists; return its rows, or why not."""
    path = BENCH / "bench_bus.py"
    if not path.exists():
        return "bench/bench_bus.py does not exist"
    args = ["--samples", "60", "--events", "500"] if quick else ["--samples", "200", "--events", "10000"]
    try:
        out = subprocess.run(
            [sys.executable, str(path), *args], capture_output=True, text=True, timeout=300, cwd=str(ROOT)
        )
    except subprocess.TimeoutExpired:
        return "bench/bench_bus.py did not finish within 300 s"
    lines = out.stdout.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("measure")), None)
    if out.returncode != 0 or header is None:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"bench/bench_bus.py failed (exit {out.returncode}): {tail[0][:200]}"
    rows = []
    for line in lines[header + 1 :]:
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        if len(parts) >= 2:
            rows.append((parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    return rows


# -- 4. replay cost -------------------------------------------------------------------------------------------


async def call_times(client: Client, workflow_id: str) -> tuple[list[int], dict[int, int], dict[int, int]]:
    shard = client.keys.for_workflow(workflow_id)
    calls = await client.store.redis.hgetall(shard.calls(workflow_id))
    seqs = sorted(int(k) for k in calls if k.isdigit())
    started = {s: int(calls[f"{s}:t"]) for s in seqs if f"{s}:t" in calls}
    finished = {s: int(calls[f"{s}:f"]) for s in seqs if f"{s}:f" in calls}
    return seqs, started, finished


async def replay_cost(settings: Settings, steps: int, window: int) -> dict[str, float]:
    """Per-iteration time of one long chain around step 10 and around step ``steps - window - 10``;
    then a cold step: a dispatcher restart while the workflow sleeps after ``steps`` steps forces a full
    replay of its whole history by the new dispatcher."""
    far = steps - window - 10
    async with Client(settings=settings) as client:
        with roles(settings, "scheduler"):
            with roles(settings, "dispatcher"):
                await registered(client, "long_chain")
                handle = await client.start(bench_app.long_chain, steps)
                await handle.result(timeout=300)
                seqs, started, _ = await call_times(client, handle.workflow_id)
                # The warm run of the cold-step workflow: the chain, a short sleep, one more step.
                sleep_s = 6.0
                cold = await client.start(bench_app.chain_then_sleep, {"steps": steps, "sleep": sleep_s})

                async def sleeping() -> bool:
                    state = await client.get_state(cold.workflow_id)
                    return state is not None and state.status == "SLEEPING"

                await until(sleeping, 300, "the chain reaching its sleep")
            # The first dispatcher stopped (drained; its copy of the run is gone). A new one takes over.
            with roles(settings, "dispatcher"):
                await registered(client, "chain_then_sleep")
                ready_ms = int((await client.store.redis.time())[0] * 1000)
                await cold.result(timeout=60)
                cold_seqs, cold_started, cold_finished = await call_times(client, cold.workflow_id)
    near_ms = (started[seqs[10 + window]] - started[seqs[10]]) / window
    far_ms = (started[seqs[far + window]] - started[seqs[far]]) / window
    sleep_seq, last_seq = cold_seqs[-2], cold_seqs[-1]
    due_ms = cold_finished[sleep_seq]
    warm_tail = (cold_started[cold_seqs[-3]] - cold_started[cold_seqs[-3 - window]]) / window
    return {
        "near_ms": near_ms,
        "far_ms": far_ms,
        "far_at": far,
        "cold_ms": cold_started[last_seq] - max(due_ms, ready_ms),
        "cold_valid": float(ready_ms <= due_ms),
        "warm_tail_ms": warm_tail,
        "history": len(cold_seqs) - 1,
    }


# -- 5. memory --------------------------------------------------------------------------------------------------


async def memory_detail(redis_: Any) -> dict[str, int]:
    """used_memory; what is not data: Redis's own keyspace hash tables (they grow, and shrink only below 10%
    fill) and the clients' connection buffers (transient); keys."""
    await asyncio.sleep(0.5)
    stats = await redis_.memory_stats()
    db = stats.get("db.0") or {}
    tables = int(db.get("overhead.hashtable.main", 0)) + int(db.get("overhead.hashtable.expires", 0))
    clients = int(stats.get("clients.normal", 0))
    keys = int(await redis_.dbsize())
    return {"used": int(stats["total.allocated"]), "tables": tables, "clients": clients, "keys": keys}


async def memory_parked(settings: Settings, count: int) -> dict[str, Any]:
    """Redis memory per workflow parked in a one-hour sleep (small input), over ``count`` workflows."""
    async with Client(settings=settings) as client:
        with roles(settings, "dispatcher", "scheduler", concurrency=200):
            await registered(client, "sleeper")
            warm = await client.start(bench_app.one_task, 1)
            await warm.result(timeout=30)
            before = await memory_detail(client.store.redis)
            base = await count_status(client, "SLEEPING")
            ids = await start_many(client, bench_app.sleeper, [3_600_000] * count)

            async def all_sleeping() -> bool:
                return await count_status(client, "SLEEPING") >= base + count

            await until(all_sleeping, 300, "every workflow parking in its sleep", interval=0.1)
            after = await memory_detail(client.store.redis)
            shard = client.keys.for_workflow(ids[0])

            async def usage(key: str, samples: int | None = None) -> int:
                return int(await client.store.redis.memory_usage(key, samples=samples) or 0)

            breakdown = {
                "workflow hash": await usage(shard.wf(ids[0])),
                "calls hash": await usage(shard.calls(ids[0])),
                "timers zset, per entry": await usage(shard.timers, samples=0) / count,
                "index by status, per entry": await usage(
                    shard.index("SLEEPING", bench_app.sleeper.name, bench_app.sleeper.version), samples=0
                )
                / count,
                "index of ids, per entry": await usage(shard.ids, samples=0) / count,
            }
    used = after["used"] - before["used"]
    return {
        "per_workflow": used / count,
        "total_mib": used / 2**20,
        "keys_per_workflow": (after["keys"] - before["keys"]) / count,
        "tables_per_workflow": (after["tables"] - before["tables"]) / count,
        "breakdown": breakdown,
    }


async def prefix_keys(redis_: Any, prefix: str) -> int:
    return sum([1 async for _ in redis_.scan_iter(match=f"*{prefix}*", count=2000)])


async def memory_retention(url: str, count: int) -> dict[str, float]:
    """Finished workflows with a 1 s retention: memory and keys after the scheduler expired them."""
    settings = settings_for(url, retention=1.0, heartbeat_interval=0.5, heartbeat_timeout=5.0)
    async with Client(settings=settings) as client:
        redis_ = client.store.redis
        with roles(settings, "dispatcher", "scheduler", concurrency=200):
            await registered(client, "one_task")

            async def all_expired() -> bool:
                return not await redis_.zcard(client.keys.shard(0).index_expire) and not await count_status(
                    client, "COMPLETED"
                )

            warm = await client.start(bench_app.one_task, 1)  # every lazily created structure exists
            await warm.result(timeout=30)
            await until(all_expired, 60, "the warm-up workflow expiring")
            keys_before, before = await prefix_keys(redis_, settings.prefix), await memory_detail(redis_)
            await start_many(client, bench_app.one_task, list(range(count)))

            async def all_done() -> bool:  # finished ones may already have expired: count what runs
                return not await count_status(client, "RUNNING")

            await until(all_done, 300, "the workflows finishing", interval=0.05)
            with Timer() as expiry:
                await until(all_expired, 120, "the finished workflows expiring", interval=0.1)
            keys_after, after = await prefix_keys(redis_, settings.prefix), await memory_detail(redis_)
    return {
        "left_bytes": after["used"] - before["used"],
        "left_content": (after["used"] - after["tables"] - after["clients"])
        - (before["used"] - before["tables"] - before["clients"]),
        "left_keys": keys_after - keys_before,
        "expiry_s": expiry.seconds,
    }


# -- profile -------------------------------------------------------------------------------------------------------

CATEGORIES = [
    ("replay: step loop, workflow run, context (bdurable.replay)", ("bdurable/replay/",)),
    ("dispatcher: claims, slots, steps, task attempts, commits (services/dispatcher)", ("services/dispatcher/",)),
    ("wire: claims, replies and step documents decoded and encoded (bdurable.wire)", ("bdurable/wire.py",)),
    ("task invocation: argument binding (bdurable.task, inspect)", ("bdurable/task.py", "inspect.py")),
    ("store: auto-pipelining, script calls (bdurable.store)", ("bdurable/store.py",)),
    ("redis-py: command packing, pipelines, connections", ("/redis/",)),
    ("hiredis reply parsing", ("hiredis",)),
    ("JSON (json, bdurable.codec)", ("/json/", "bdurable/codec.py", "_json")),
    ("structlog contextvars and logging", ("structlog/", "logging/")),
    ("prometheus metrics", ("prometheus_client/",)),
    ("asyncio: event loop, tasks, futures, timeouts", ("asyncio/", "_asyncio", "_contextvars", "contextlib.py")),
    ("socket system calls (send, recv, epoll registration)", ("selectors.py", "socket", "select.epoll")),
    ("other bdurable modules (payloads, metrics helpers, keys...)", ("bdurable/",)),
    ("workflow and task code (bench_app)", ("bench_app.py",)),
]
IDLE = "'poll' of 'select.epoll' objects"  # the event loop blocked, waiting for I/O: not a cost


def _category(filename: str, name: str) -> str | None:
    where = f"{filename}:{name}"
    return next((label for label, marks in CATEGORIES if any(m in where for m in marks)), None)


def summarize_profile(path: str, items: float) -> dict[str, Any]:
    """Shares of the profiled (wall-clock) time by category, the time blocked in epoll left out.

    A built-in function (``len``, ``ContextVar.set``...) counts for the category of its caller."""
    stats: Any = pstats.Stats(path)
    entries = stats.stats.items()
    idle = sum(v[2] for (_f, _l, name), v in entries if IDLE in name)
    total = sum(v[2] for v in stats.stats.values()) - idle
    by_category: dict[str, float] = {}
    functions = []
    for (filename, line, name), (_cc, _nc, tottime, cumtime, callers) in entries:
        if IDLE in name:
            continue
        own = _category(filename, name)
        if own is None and filename == "~" and callers:
            for (c_file, _c_line, c_name), caller_stats in callers.items():
                label = _category(c_file, c_name) or "other"
                by_category[label] = by_category.get(label, 0.0) + caller_stats[2]
        else:
            label = own or "other"
            by_category[label] = by_category.get(label, 0.0) + tottime
        short = filename.split("/site-packages/")[-1].split("/lib/python3.11/")[-1]
        short = short.split("/bdurable/")[-1] if "/bdurable/" in short else short
        functions.append((tottime, cumtime, f"{short}:{line}({name})"))
    functions.sort(reverse=True)
    return {
        "total_s": total,
        "idle_s": idle,
        "us_per_item": total / items * 1e6,
        "categories": sorted(((v / total, k) for k, v in by_category.items()), reverse=True),
        "top": [(t / total, t / items * 1e6, name) for t, _c, name in functions[:15]],
    }


# -- peers ----------------------------------------------------------------------------------------------------------


def peers_python() -> str | None:
    """The peers' venv (created and filled with pip from PyPI on first use); None if that fails."""
    python = PEERS_VENV / "bin" / "python"
    marker = PEERS_VENV / "bench-pins.txt"
    wanted = "\n".join(PINS)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return str(python)
    try:
        print("installing saq and arq into bench/.peers-venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS],
            check=True,
            timeout=600,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"could not install the peers: {exc}", file=sys.stderr)
        return None
    marker.write_text(wanted)
    return str(python)


def starts_alone(count: int) -> dict[str, float]:
    """bench/bench_starts.py in a process of its own, on a Redis of its own, as a user's client would be. Run
    here, after the other sections, the batch measured 25,000/s where alone it made 31,000-42,000/s (not for
    this process's larger heap: a heap of millions of objects does not slow it; the cause was not found)."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "bench_starts.py"), "--count", str(count), "--repeat", "3", "--json"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def peer(python: str | None, *args: Any) -> dict[str, float] | None:
    if python is None:
        return None
    out = subprocess.run(
        [python, str(BENCH / "peers.py"), *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if out.returncode != 0:
        print(f"peer run {args[:2]} failed: {out.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- the run ------------------------------------------------------------------------------------------------------


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "redis-py": redis_py.__version__,
        "redis-server": server.split(" sha=")[0],
        "kernel": platform.release(),
        "load": load_average(),
    }


SECTIONS = (
    "limits", "throughput", "loop", "latency", "replay", "memory", "scale", "profile", "cluster", "bus", "starts",
    "rss",
)  # fmt: skip


async def main(args: Any) -> None:
    began = time.monotonic()
    quick = args.quick
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    n_drain = 1000 if quick else args.count
    n_three = max(300, n_drain // 2)
    n_scale = n_three
    n_park = 2000 if quick else 10_000
    n_lat = 60 if quick else 200
    chain = 300 if quick else 1100
    window = 30 if quick else 50
    report = Report()
    report.extra["repeat"] = 1 if quick else args.repeat
    report.extra["load_start"] = load_average()
    report.extra["counts"] = {
        "drain": n_drain, "three": n_three, "park": n_park, "latency": n_lat, "chain": chain,
        "bus_waiters": 500 if quick else 10_000,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    peers = peers_python() if only & {"throughput", "latency"} else None
    if peers:
        report.extra["peer_versions"] = peer(peers, "versions")

    def progress(what: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {what}", flush=True)

    scale_rows: list[tuple[str, int, dict[str, float]]] = []
    with redis() as server:
        url = server.url
        if "limits" in only:
            progress("limits")
            limits_section(
                report,
                await client_limits(url, 2000 if quick else 5000) | await idle_penalty(url, 100 if quick else 300),
                server_limits(server.port, 50_000 if quick else 200_000),
            )
        if "throughput" in only:
            saq_levels = sorted({10, 100, args.concurrency})  # saq is compared at its best concurrency
            runs: dict[str, list[dict[str, float]]] = {f"saq@{c}": [] for c in saq_levels}
            runs.update(arq=[], one=[], three=[])
            for attempt in range(1 if quick else args.repeat):  # interleaved, so that drift hits all alike
                progress(f"drains, round {attempt + 1}: saq ({saq_levels}), arq, b-durable 1-task and 3-task")
                drains = [(f"saq@{c}", peer(peers, "drain", "saq", url, n_drain, c)) for c in saq_levels]
                drains.append(("arq", peer(peers, "drain", "arq", url, n_drain, args.concurrency)))
                for name, figures in drains:
                    if figures:
                        figures["concurrency"] = float(name.partition("@")[2] or args.concurrency)
                        runs[name].append(figures)
                runs["one"].append(
                    await drain(settings_for(url), [url], bench_app.one_task, 1, n_drain, args.concurrency)
                )
                runs["three"].append(
                    await drain(settings_for(url), [url], bench_app.three_tasks, 3, n_three, args.concurrency)
                )
            picked = {name: median_run(values) for name, values in runs.items()}
            saq_runs = [(name, figures) for name, figures in picked.items() if name.startswith("saq@") and figures]
            best = max(saq_runs, key=lambda nf: nf[1]["per_s"], default=None)
            picked["saq"] = best[1] if best else None
            runs["saq"] = runs[best[0]] if best else []
            report.extra["saq_levels"] = {name: figures["per_s"] for name, figures in saq_runs}
            report.extra["spread"] = {
                name: (min(r["per_s"] for r in values), max(r["per_s"] for r in values))
                for name, values in runs.items()
                if values
            }
            one, three = picked["one"], picked["three"]
            assert one is not None
            assert three is not None
            throughput_section(report, args, n_drain, n_three, one, three, picked["saq"], picked["arq"])
        if "loop" in only:
            progress("event loops: the 1-task drain on asyncio's loop and on uvloop")
            loop_section(report, await event_loops(url, n_drain, args.concurrency, 1 if quick else args.repeat))
        if "latency" in only:
            progress("latency")
            ours: list[dict[str, float]] = []
            theirs: list[dict[str, float]] = []
            for _ in range(1 if quick else args.repeat):  # interleaved: a shift of the machine hits both alike
                ours.append(await latency(settings_for(url), n_lat))
                theirs += filter(None, [peer(peers, "latency", "saq", url, n_lat)])
            lat, saq_lat = median_run(ours, by="p50_ms"), median_run(theirs, by="p50_ms")
            assert lat is not None
            report.extra["latency_rounds"] = {"ours": [r["p50_ms"] for r in ours], "saq": [r["p50_ms"] for r in theirs]}
            lag = await timer_lag(settings_for(url), 40 if quick else 100, 20)
            latency_section(report, n_lat, lat, saq_lat, lag)
        if "replay" in only:
            progress("replay cost")
            replay_section(report, window, await replay_cost(settings_for(url), chain, window))
        if "memory" in only:
            progress("memory")
            parked = await memory_parked(settings_for(url), n_park)
            kept = await memory_retention(url, n_park // 2)
            memory_section(report, n_park, parked, kept)
        if "scale" in only:
            progress("scale: one Redis")
            for dispatchers in (1, 2, 4):
                figures = await drain(
                    settings_for(url), [url], bench_app.three_tasks, 3, n_scale, args.concurrency, dispatchers
                )
                scale_rows.append(("one Redis", dispatchers, figures))
        if "starts" in only:
            progress("starts from one client (bench/bench_starts.py), in a process and on a Redis of its own")
            n_starts = 1000 if quick else 5000
            starts_section(report, n_starts, starts_alone(n_starts))
        if "profile" in only:
            progress("profile: one dispatcher under cProfile")
            profile_path = str(RESULTS / "dispatcher.prof")
            profiled = await drain(
                settings_for(url), [url], bench_app.three_tasks, 3, n_three, args.concurrency, profile=profile_path
            )
            report.extra["profile"] = summarize_profile(profile_path, (n_three + 50) * 7)
            report.extra["profiled"] = profiled
    if "cluster" in only:
        progress("scale: 3-node cluster")
        try:
            with cluster() as nodes:
                urls = [node.url for node in nodes.nodes]
                for dispatchers in (1, 2, 4):
                    settings = settings_for(nodes.url, shards=12)
                    figures = await drain(
                        settings, urls, bench_app.three_tasks, 3, n_scale, args.concurrency, dispatchers
                    )
                    scale_rows.append(("3-node cluster, 12 shards", dispatchers, figures))
        except Exception as exc:  # the single-server figures still stand
            import traceback

            traceback.print_exc()
            print(f"cluster run failed: {exc!r}", file=sys.stderr)
            report.extra["cluster_error"] = repr(exc)
    if scale_rows:
        scale_section(report, scale_rows)
    if "bus" in only:
        progress("signal bus (bench/bench_bus.py)")
        bus_section(report, bus_bench(quick))
    if "rss" in only:
        progress("dispatcher memory (bench/bench_memory.py)")
        n_rss = 2000 if quick else 10_000
        rss_section(report, n_rss, await bench_memory.measure_payloads(n_rss))

    seconds = time.monotonic() - began
    report.extra["seconds"] = seconds
    print_table(report)
    if only == set(SECTIONS) and (not quick or args.write_doc):
        write_doc(report, args, machine())
        print(f"\nwrote {DOC.relative_to(ROOT)}")
    print(f"bench run took {seconds:.0f} s")


def limits_section(report: Report, limits: dict[str, float], served: dict[str, float]) -> None:
    rows = report.section("The limits (one Python process with redis-py asyncio; the server)")
    rows.append(Row("redis-py sequential round trips/s", fmt(limits["sequential"]), note="PING, one at a time"))
    rows.append(Row("redis-py round trips/s, 64 in flight", fmt(limits["in_flight_64"]), note="64 coroutines"))
    rows.append(Row("redis-py commands/s in pipelines of 32", fmt(limits["pipelined_32"]), note="PING x 32"))
    if "script_us_idle" in limits:
        rows.append(
            Row(
                "redis-py round trip p50, back to back / after 10 ms idle (ms)",
                f"{limits['round_trip_ms_warm']:.2f} / {limits['round_trip_ms_idle']:.2f}",
                note="PING; a quiet system pays the second figure at every hop",
            )
        )
        rows.append(
            Row(
                "server: one small script in Redis, back to back / after 10 ms idle (us)",
                f"{limits['script_us_warm']:.1f} / {limits['script_us_idle']:.1f}",
                note="a loop of 2,000 additions and a SET; INFO commandstats",
            )
        )
    if served:
        rows.append(
            Row("server: small Lua scripts/s, unpipelined", fmt(served["unpipelined"]), note="redis-benchmark -c 50")
        )
        rows.append(Row("server: small Lua scripts/s, pipelines of 32", fmt(served["pipelined_32"])))
    report.extra["limits"] = limits
    report.extra["served"] = served


def throughput_section(
    report: Report,
    args: Any,
    n_drain: int,
    n_three: int,
    one: dict[str, float],
    three: dict[str, float],
    saq: dict[str, float] | None,
    arq: dict[str, float] | None,
) -> None:
    report.extra.update(one=one, three=three, saq=saq, arq=arq)
    rows = report.section(f"Throughput, one worker process (dispatcher concurrency {args.concurrency}), same Redis")
    levels = report.extra.get("saq_levels", {})
    for name, figures in (("saq", saq), ("arq", arq)):
        if figures:
            at = f"concurrency {figures['concurrency']:.0f}"
            if name == "saq" and len(levels) > 1:
                at = "its best concurrency: " + ", ".join(f"{k[4:]}: {fmt(v)}/s" for k, v in levels.items())
            rows.append(
                Row(
                    f"{name}: no-op jobs/s",
                    fmt(figures["per_s"]),
                    note=f"{n_drain} jobs, {at}; {figures['round_trips_per_job']:.1f} round trips/job; "
                    f"Redis CPU {figures['redis_cpu']:.0%}, worker CPU {figures['worker_cpu']:.0%}"
                    + spread(report, name),
                )
            )
    ratio = one["per_s"] / saq["per_s"] if saq else float("nan")
    rows.append(
        Row(
            "1-task workflows/s",
            fmt(one["per_s"]),
            f"{ratio:.2f}x saq (target >= 2x)" if saq else "saq not measured",
            verdict(ratio >= 2) if saq else "",
            f"{n_drain} workflows, {fmt(one['items_per_s'])} steps+tasks/s; Redis CPU {one['redis_cpu']:.0%}, "
            f"dispatcher CPU {one['dispatcher_cpu']:.0%}, machine {one['machine_cpu']:.0%} of all cores"
            + disturbed(one)
            + spread(report, "one"),
        )
    )
    dbos = three["per_s"] / DBOS_WORKFLOWS_PER_S[1]
    rows.append(
        Row(
            "3-task workflows/s",
            fmt(three["per_s"]),
            f"{dbos:.1f}x DBOS's 80/s, quoted (target >= 12x)",
            verdict(dbos >= 12),
            f"{n_three} workflows, {fmt(three['items_per_s'])} steps+tasks/s; Redis CPU {three['redis_cpu']:.0%}, "
            f"dispatcher CPU {three['dispatcher_cpu']:.0%}, machine {three['machine_cpu']:.0%} of all cores"
            + disturbed(three)
            + spread(report, "three"),
        )
    )
    rows.append(
        Row(
            "DBOS (PostgreSQL): 3-step workflows/s",
            f"{DBOS_WORKFLOWS_PER_S[0]}-{DBOS_WORKFLOWS_PER_S[1]}",
            note="reference quoted in the issue, NOT measured here (p50 latency 14-18 ms)",
        )
    )
    rows = report.section("Redis round trips and commands per durable step, under load (Redis's own counters)")
    for label, figures in (("1-task", one), ("3-task", three)):
        rows.append(
            Row(
                f"{label}: round trips per step or task attempt",
                f"{figures['round_trips_per_item']:.2f}",
                "target <= 2 (claim + commit)",
                verdict(figures["round_trips_per_item"] <= 2),
                f"{figures['commands_per_item']:.2f} client commands "
                f"({figures['script_calls_per_item']:.2f} script calls); "
                f"{figures['inner_commands_per_item']:.1f} commands run inside scripts",
            )
        )
    rows.append(
        Row(
            "Lua time per script call (us)",
            f"{three['usec_per_script']:.1f}",
            note=f"3-task drain: scripts kept Redis busy {three['lua_share']:.0%} of the wall time",
        )
    )


def latency_section(
    report: Report, n_lat: int, lat: dict[str, float], saq_lat: dict[str, float] | None, lag: dict[str, float]
) -> None:
    report.extra.update(latency=lat, saq_latency=saq_lat, timer_lag=lag)
    rows = report.section("Latency on an idle system")
    if saq_lat:
        rows.append(
            Row(
                "saq: enqueue-to-result p50 / p99 (ms)",
                f"{saq_lat['p50_ms']:.2f} / {saq_lat['p99_ms']:.2f}",
                note=latency_rounds(report, "saq").removeprefix("; "),
            )
        )
    rows.append(
        Row(
            "1-task start-to-result p50 (ms)",
            f"{lat['p50_ms']:.2f}",
            f"{lat['p50_ms'] / saq_lat['p50_ms']:.2f}x saq's p50 (target <= 1x)" if saq_lat else "",
            verdict(lat["p50_ms"] <= saq_lat["p50_ms"]) if saq_lat else "",
            f"{n_lat} samples, started by definition; by name (version lookup): p50 {lat['by_name_p50_ms']:.2f} ms"
            + latency_rounds(report, "ours"),
        )
    )
    rows.append(
        Row(
            "1-task start-to-result p99 (ms)",
            f"{lat['p99_ms']:.2f}",
            f"{lat['p99_ms'] / lat['p50_ms']:.2f}x p50 (target <= 2x)",
            verdict(lat["p99_ms"] <= 2 * lat["p50_ms"]),
            f"max {lat['max_ms']:.1f} ms",
        )
    )
    rows.append(
        Row(
            "1-task, idle: Redis round trips per workflow",
            f"{lat['round_trips']:.1f}",
            note=f"client + dispatcher + scheduler; {lat['commands']:.1f} client commands per workflow",
        )
    )
    rows.append(
        Row(
            "timer fires after its due time, p50 / p99 (ms)",
            f"{lag['p50_ms']:.0f} / {lag['p99_ms']:.0f}",
            "p99 target <= 5 ms",
            verdict(lag["p99_ms"] <= 5),
            f"Redis clock, 1 ms resolution; max {lag['max_ms']:.0f} ms; workflow finished after due: "
            f"p50 {lag['resumed_p50_ms']:.0f} / p99 {lag['resumed_p99_ms']:.0f} ms",
        )
    )


def replay_section(report: Report, window: int, rep: dict[str, float]) -> None:
    report.extra["replay"] = rep
    rows = report.section("Replay cost: a long chain (one task per step), one dispatcher, idle system")
    rows.append(Row("time per step+task around step 10 (ms)", f"{rep['near_ms']:.2f}", note=f"mean over {window}"))
    ratio = rep["far_ms"] / rep["near_ms"]
    rows.append(
        Row(
            f"time per step+task around step {int(rep['far_at'])} (ms)",
            f"{rep['far_ms']:.2f}",
            f"{ratio:.2f}x step 10 (target <= 2x)",
            verdict(ratio <= 2),
            "the dispatcher keeps the run in memory",
        )
    )
    rows.append(
        Row(
            f"cold step after a dispatcher restart, history of {int(rep['history'])} (ms)",
            f"{rep['cold_ms']:.0f}",
            note="full replay (history load + re-run) then commit"
            + ("" if rep["cold_valid"] else "; INVALID: the new dispatcher registered after the timer was due")
            + f"; warm steps just before: {rep['warm_tail_ms']:.2f} ms",
        )
    )


def memory_section(report: Report, n_park: int, parked: dict[str, Any], kept: dict[str, float]) -> None:
    report.extra.update(parked=parked, retention=kept)
    rows = report.section("Redis memory")
    rows.append(
        Row(
            "bytes per workflow parked in a sleep",
            fmt(parked["per_workflow"]),
            "target <= 1,024",
            verdict(parked["per_workflow"] <= 1024),
            f"{n_park:,} workflows, {parked['total_mib']:.1f} MiB (used_memory); "
            f"{parked['keys_per_workflow']:.1f} keys each; Redis's keyspace tables: "
            f"{parked['tables_per_workflow']:.0f} B of it",
        )
    )
    rows.append(
        Row(
            "  of which (MEMORY USAGE, bytes)",
            fmt(sum(parked["breakdown"].values())),
            note=", ".join(f"{name} {value:,.0f}" for name, value in parked["breakdown"].items()),
        )
    )
    rows.append(
        Row(
            "left after retention (bytes / keys)",
            f"{int(kept['left_content']):,} / {int(kept['left_keys'])}",
            "target: back to baseline",
            verdict(kept["left_keys"] <= 0 and kept["left_content"] <= 64 * 1024),
            f"{n_park // 2:,} finished workflows, retention 1 s, all expired {kept['expiry_s']:.1f} s after the "
            f"last finished; tolerance 64 KiB; bytes without Redis's keyspace hash tables, which keep their grown "
            f"size, and the clients' connection buffers (with them: {int(kept['left_bytes']):,} B)",
        )
    )


def scale_section(report: Report, scale_rows: list[tuple[str, int, dict[str, float]]]) -> None:
    report.extra["scale"] = scale_rows
    rows = report.section("Scale: 3-task workflows, N dispatcher processes (2 cores for everything!)")
    single = {n: f for where, n, f in scale_rows if where == "one Redis"}
    for where, dispatchers, figures in scale_rows:
        share = figures["per_s"] / single[dispatchers]["per_s"] if where != "one Redis" and dispatchers in single else 0
        rows.append(
            Row(
                f"{where}, {dispatchers} dispatcher(s): workflows/s",
                fmt(figures["per_s"]),
                versus=f"{share:.1%} of one Redis" + (" (target >= 90%)" if dispatchers == 1 else "") if share else "",
                verdict=verdict(share >= 0.9) if share and dispatchers == 1 else "",
                note=f"Redis CPU {figures['redis_cpu']:.0%} (sum of nodes), dispatchers CPU "
                f"{figures['dispatcher_cpu']:.0%}, machine {figures['machine_cpu']:.0%} of all cores; "
                f"{figures['round_trips_per_item']:.2f} round trips/item" + disturbed(figures),
            )
        )


STDLIB_JSON = "asyncio, standard-library JSON"  # the JSON accelerator (pydantic-core) off
HEAP_DEFAULT = "asyncio, CPython's collector settings"  # the role's heap not settled (bdurable.runtime.heap)


async def event_loops(url: str, count: int, concurrency: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    """The 1-task drain with the roles on asyncio's own loop, on uvloop (if installed), and on asyncio with the
    JSON accelerator off, or the collector left at CPython's settings, interleaved."""
    runs: dict[str, list[dict[str, float]]] = {"asyncio": [], "uvloop": [], STDLIB_JSON: [], HEAP_DEFAULT: []}
    variants = ["asyncio", STDLIB_JSON, HEAP_DEFAULT] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])
    for _ in range(rounds):
        for variant in variants:
            loop = "uvloop" if variant == "uvloop" else "asyncio"
            settings = dataclasses.replace(settings_for(url), event_loop=loop)
            options: dict[str, Any] = {"json": "stdlib"} if variant == STDLIB_JSON else {}
            if variant == HEAP_DEFAULT:
                options["heap"] = "default"
            runs[variant].append(await drain(settings, [url], bench_app.one_task, 1, count, concurrency, **options))
    return runs


def loop_section(report: Report, runs: dict[str, list[dict[str, float]]]) -> None:
    picked = {variant: median_run(values) for variant, values in runs.items()}
    report.extra["loops"] = {variant: figures for variant, figures in picked.items() if figures}
    report.extra["heap"] = {"settled": picked["asyncio"], "default": picked[HEAP_DEFAULT]}
    rows = report.section(
        "Accelerators: the 1-task drain on each event loop (BDURABLE_EVENT_LOOP), with JSON by the standard library "
        "instead of pydantic-core, and with the role's heap not settled (CPython's collector settings)"
    )
    base = picked["asyncio"]
    assert base is not None
    for variant, figures in picked.items():
        if figures is None:
            rows.append(Row(f"1-task workflows/s, {variant}", "not measured", note="uvloop is not installed"))
            continue
        gain = figures["per_s"] / base["per_s"]
        rows.append(
            Row(
                f"1-task workflows/s, {variant}",
                fmt(figures["per_s"]),
                versus="" if variant == "asyncio" else f"{gain:.2f}x asyncio",
                note=f"dispatcher CPU {figures['dispatcher_cpu']:.0%} "
                f"({figures['dispatcher_cpu'] / figures['per_s'] * 1e6:.0f} us per workflow; its garbage collector "
                f"{figures['gc_us_per_workflow']:.0f} us per workflow over its life, longest pause "
                f"{figures['gc_longest_ms']:.0f} ms), Redis CPU {figures['redis_cpu']:.0%}; "
                f"{len(runs[variant])} run(s): " + ", ".join(fmt(r["per_s"]) for r in runs[variant]),
            )
        )


def starts_section(report: Report, count: int, best: dict[str, float]) -> None:
    report.extra["starts"] = best
    rows = report.section(
        "Starts from one client process (bench/bench_starts.py; no dispatcher runs; a process and a Redis of its own)"
    )
    ratio = best["start_many"] / best["one by one"]
    rows.append(Row("workflows started/s, one by one", fmt(best["one by one"]), note=f"{count} `client.start` calls"))
    rows.append(
        Row(
            "workflows started/s, `start_many`",
            fmt(best["start_many"]),
            versus=f"{ratio:.1f}x one by one (target >= 10x)",
            verdict=verdict(ratio >= 10),
            note=f"{count} inputs in one call; median of 3",
        )
    )


def rss_section(report: Report, runs: int, measured: list[tuple[int, dict[str, float]]]) -> None:
    report.extra["rss"] = measured
    rows = report.section(f"Dispatcher memory: {runs:,} runs in its cache (bench/bench_memory.py)")
    for payload, f in measured:
        grown = f["full"] - f["idle"]
        rows.append(
            Row(
                f"RSS with {runs:,} runs cached, {payload:,} B payloads (MiB)",
                f"{f['full']:,.0f}",
                versus=f"{grown / f['counted']:.2f}x the bytes counted",
                note=f"idle {f['idle']:.0f} MiB; {grown * 1024 / runs:.1f} KiB per run; the cache counted "
                f"{f['counted']:,.0f} MiB against BDURABLE_RUN_CACHE_BYTES",
            )
        )


def bus_section(report: Report, bus: list[tuple[str, str, str]] | str) -> None:
    report.extra["bus"] = bus
    rows = report.section("Events (bench/bench_bus.py, run as is)")
    if isinstance(bus, str):
        rows.append(Row("event resumes its workflow", "not measured", note=bus))
        return
    for name, value, note in bus:
        row = Row(name, value, note=note)
        if name.startswith("send_event") and "/" in value:
            p99 = float(value.split("/")[1])
            row.versus, row.verdict = "p99 target <= 5 ms", verdict(p99 <= 5)
        if name.startswith("bus: longest Redis command during that publish"):
            row.versus, row.verdict = "target <= 5 ms", verdict(float(value) <= 5)
        rows.append(row)


def print_table(report: Report) -> None:
    all_rows = [r for _, rows in report.sections for r in rows]
    if not all_rows:  # a section that only records (the profile: see bench/results/dispatcher.prof)
        return
    w0 = max(len(r.name) for r in all_rows)
    w1 = max(len(r.value) for r in all_rows)
    w2 = max(len(r.versus) for r in all_rows)
    for title, rows in report.sections:
        print(f"\n== {title}")
        for r in rows:
            print(f"{r.name:<{w0}}  {r.value:>{w1}}  {r.versus:<{w2}}  {r.verdict:<6}  {r.note}")
    profile = report.extra.get("profile")
    if profile:
        print("\n== Where a dispatcher's time goes (cProfile, share of profiled CPU time)")
        for share, label in profile["categories"]:
            print(f"{share:6.1%}  {label}")


def write_doc(report: Report, args: Any, host: dict[str, str]) -> None:
    from docs_template import previous_figures, render  # bench/, beside this file

    DOC.write_text(render(report, args, host, previous_figures(earlier_doc(args.before))))


def earlier_doc(revision: str | None) -> str:
    """The docs/performance.md to compare with: the one of a git revision (``--before``), else the file as it is."""
    if revision is None:
        return DOC.read_text() if DOC.exists() else ""
    shown = subprocess.run(
        ["git", "show", f"{revision}:docs/performance.md"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return shown.stdout


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke test of the benchmark")
    parser.add_argument("--count", type=int, default=3000, help="workflows (and peer jobs) per 1-task drain")
    parser.add_argument("--concurrency", type=int, default=200, help="dispatcher (and peer worker) concurrency")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds of the throughput drains (median)")
    parser.add_argument("--write-doc", action="store_true", help="write docs/performance.md even with --quick")
    parser.add_argument(
        "--before", help="git revision whose docs/performance.md fills the 'before' column (default: the file now)"
    )
    parser.add_argument("--only", help=f"comma-separated sections to run (no doc written): {', '.join(SECTIONS)}")
    asyncio.run(main(parser.parse_args()))
