"""Peer job queues (saq, arq) measured against the same Redis: run with the peers' own interpreter.

``bench/run.py`` creates ``bench/.peers-venv`` (pip, from PyPI, pinned versions below) and runs this file
with that venv's Python, so b-durable's environment never sees the peers' dependencies. Each command
prints one JSON object on stdout:

* ``drain KIND URL COUNT CONCURRENCY``: one worker process (``KIND`` = saq or arq) is started and warmed
  up, then paused (SIGSTOP) while ``COUNT`` no-op jobs are enqueued, then resumed and timed until every
  job is done, with Redis's own figures (CPU, commands, read events) and the worker's CPU over that time.
* ``latency saq URL SAMPLES``: saq's enqueue-to-result latency, one job at a time on an idle system.
* ``worker KIND URL QUEUE CONCURRENCY``: the worker process itself (used by ``drain``).

Nothing here imports b-durable.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlparse

PINS = [
    "saq==0.26.4",
    "arq==0.28.0",
    "redis[hiredis]",
    "typing_extensions",
]  # what run.py installs into the peers' venv
CHUNK = 500


def peer_module(name: str) -> Any:
    """A module of the peers' venv (untyped here: b-durable's environment does not have them)."""
    return importlib.import_module(name)


async def noop_saq(ctx: Any) -> None:
    return None


async def noop_arq(ctx: Any) -> None:
    return None


# -- the worker processes ---------------------------------------------------------------------------------


async def saq_worker(url: str, queue_name: str, concurrency: int) -> None:
    Queue, Worker = peer_module("saq").Queue, peer_module("saq").Worker

    queue = Queue.from_url(url, name=queue_name)
    worker = Worker(queue, functions=[("noop", noop_saq)], concurrency=concurrency)
    await worker.start()  # returns on SIGTERM (saq installs its own handlers)
    await queue.disconnect()


async def arq_worker(url: str, queue_name: str, concurrency: int) -> None:
    RedisSettings = peer_module("arq.connections").RedisSettings
    Worker, func = peer_module("arq.worker").Worker, peer_module("arq.worker").func

    parsed = urlparse(url)
    worker = Worker(
        functions=[func(noop_arq, name="noop")],
        redis_settings=RedisSettings(host=parsed.hostname or "127.0.0.1", port=parsed.port or 6379),
        queue_name=queue_name,
        max_jobs=concurrency,
        poll_delay=0.01,  # arq polls its queue; the default 0.5 s would bound latency, not throughput
        handle_signals=True,
    )
    try:
        await worker.async_run()
    finally:
        await worker.close()


# -- measuring ------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_stats(redis: Any) -> dict[str, float]:
    info = await redis.execute_command("INFO", "commandstats", "stats", "cpu")
    commands = sum(int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_") and k != "cmdstat_info")
    return {
        "cpu": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        "reads": int(info["total_reads_processed"]),
        "commands": commands,
    }


def start_worker(kind: str, url: str, queue_name: str, concurrency: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "worker", kind, url, queue_name, str(concurrency)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


async def drain(kind: str, url: str, count: int, concurrency: int) -> dict[str, float]:
    import redis.asyncio as aioredis

    name = f"bench{uuid.uuid4().hex[:8]}"
    redis = aioredis.from_url(url)
    if kind == "saq":
        Queue = peer_module("saq").Queue

        queue: Any = Queue.from_url(url, name=name)
        await queue.connect()

        async def enqueue(n: int) -> None:
            await queue.enqueue("noop", timeout=60)

        async def remaining() -> int:
            return int(await queue.count("incomplete"))

    else:
        create_pool = peer_module("arq").create_pool
        RedisSettings = peer_module("arq.connections").RedisSettings

        parsed = urlparse(url)
        queue = await create_pool(RedisSettings(host=parsed.hostname or "127.0.0.1", port=parsed.port or 6379))
        queue_name = f"arq:{name}"
        name = queue_name

        async def enqueue(n: int) -> None:
            await queue.enqueue_job("noop", _queue_name=queue_name)

        async def remaining() -> int:
            return int(await redis.zcard(queue_name))

    worker = start_worker(kind, url, name, concurrency)
    try:
        # Warm up: the worker is running and has done a few jobs before it is paused.
        await asyncio.gather(*(enqueue(i) for i in range(20)))
        deadline = time.monotonic() + 60
        while await remaining():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"the {kind} worker did not start")
            await asyncio.sleep(0.01)
        os.kill(worker.pid, signal.SIGSTOP)
        for chunk in range(0, count, CHUNK):
            await asyncio.gather(*(enqueue(i) for i in range(chunk, min(count, chunk + CHUNK))))
        polls = 0
        before, cpu_before = await redis_stats(redis), cpu_seconds(worker.pid)
        os.kill(worker.pid, signal.SIGCONT)
        began = time.perf_counter()
        while await remaining():
            polls += 1
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - began
        after, cpu_after = await redis_stats(redis), cpu_seconds(worker.pid)
    finally:
        stop_worker(worker)
        await redis.aclose()
    return {
        "per_s": count / seconds,
        "seconds": seconds,
        "redis_cpu": (after["cpu"] - before["cpu"]) / seconds,
        "worker_cpu": (cpu_after - cpu_before) / seconds,
        "commands_per_job": (after["commands"] - before["commands"] - polls) / count,
        "round_trips_per_job": (after["reads"] - before["reads"] - polls - 1) / count,
    }


async def saq_latency(url: str, samples: int, warmup: int = 10) -> dict[str, float]:
    Queue = peer_module("saq").Queue

    name = f"bench{uuid.uuid4().hex[:8]}"
    queue = Queue.from_url(url, name=name)
    worker = start_worker("saq", url, name, 10)
    latencies: list[float] = []
    try:
        for attempt in range(3):  # the worker is up
            try:
                await queue.apply("noop", timeout=60, poll_interval=0.01)
                break
            except Exception:
                # saq's sweeper runs as its worker starts and may abort a job dequeued in the same instant
                # (its status not yet ACTIVE: "swept"); it then sleeps for a minute.
                if attempt == 2:
                    raise

        for i in range(samples + warmup):
            key = uuid.uuid4().hex
            done = asyncio.Event()

            def finished(_key: str, status: Any, done: asyncio.Event = done) -> bool:
                if str(status.value if hasattr(status, "value") else status).lower() == "complete":
                    done.set()
                    return True
                return False

            # Listen first (saq's pub/sub multiplexer), then enqueue: no completion can be missed.
            listener = asyncio.create_task(queue.listen([key], finished, timeout=10))
            await asyncio.sleep(0.002)
            start = time.perf_counter()
            await queue.enqueue("noop", key=key)
            await listener
            if not done.is_set():
                raise RuntimeError("a saq job did not complete within 10 s")
            latencies.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.002 * (i % 5))
    finally:
        stop_worker(worker)
        await queue.disconnect()
    latencies = sorted(latencies[warmup:])

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, round(p / 100 * (len(latencies) - 1)))]

    return {"p50_ms": pct(50), "p99_ms": pct(99), "max_ms": latencies[-1]}


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    command = argv[0]
    if command == "worker":
        kind, url, queue_name, concurrency = argv[1], argv[2], argv[3], int(argv[4])
        runner = saq_worker if kind == "saq" else arq_worker
        asyncio.run(runner(url, queue_name, concurrency))
        return
    result: dict[str, Any]
    if command == "drain":
        result = asyncio.run(drain(argv[1], argv[2], int(argv[3]), int(argv[4])))
    elif command == "latency":
        result = asyncio.run(saq_latency(argv[2], int(argv[3])))
    elif command == "versions":
        from importlib.metadata import version

        result = {name: version(name) for name in ("saq", "arq", "redis")}
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
