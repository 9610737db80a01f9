"""Signal-bus benchmarks: ``python bench/bench_bus.py`` prints a small table.

* latency from ``client.send_event`` to the waiting workflow's next task starting (the task records
  ``time.time()`` in Redis), p50 / p99 over ~200 samples on an idle system, one event at a time;
* the bus's throughput: N events queued while the bus is paused, then timed from its resumption until
  every one is applied: to N waiting workflows (each wakes one), and to one workflow's buffer (nobody
  waits); and one keyed publish waking N waiters (a single message, applied 25 waiters per script call), with
  the longest wait of another client's PING meanwhile.

Roles run as separate processes started with the real CLI (``bdurable <role>``), as in production,
against a local redis-server with AOF ``everysec``. The dispatcher imports this module (``--app
bench_bus``) for its workflows and task; the measurements only run under ``__main__``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from harness import percentile, redis  # noqa: E402

from bdurable import Client, Context, Settings, task, workflow  # noqa: E402

# -- the workflows the dispatcher runs ------------------------------------------------------------------

_stamps: Any = None  # the dispatcher process's own Redis connection for the stamp task


@task(name="bench_bus.stamp", max_attempts=1)
async def stamp(key: str, n: int) -> float:
    """Record when this task started (``time.time()``) where the benchmark waits for it."""
    now = time.time()
    global _stamps
    if _stamps is None:
        import redis.asyncio as aioredis

        _stamps = aioredis.from_url(os.environ["BDURABLE_REDIS_URL"])
    await _stamps.lpush(key, json.dumps([n, now]))
    return now


@workflow(version="1")
async def bus_echo(ctx: Context, input: dict[str, Any]) -> int:
    """Round after round: wait for ``go``, then run the stamp task."""
    for n in range(int(input["rounds"])):
        await ctx.wait_for_event("go")
        await stamp(input["key"], n)
    return int(input["rounds"])


@workflow(version="1")
async def bus_wait(ctx: Context, input: dict[str, Any]) -> Any:
    """Wait once, for an event (``key`` None) or a keyed publish."""
    return await ctx.wait_for_event(input.get("name", "go"), key=input.get("key"))


# -- roles as processes -----------------------------------------------------------------------------------


@contextmanager
def role(settings: Settings, name: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """One role process (``python -m bdurable.cli NAME``); SIGTERM (drain) on exit."""
    env = dict(os.environ)
    env.update(
        BDURABLE_REDIS_URL=settings.redis_url,
        BDURABLE_PREFIX=settings.prefix,
        BDURABLE_LOG_LEVEL="warning",
        BDURABLE_LOG_FORMAT="json",
        PYTHONPATH=os.pathsep.join([str(BENCH), env.get("PYTHONPATH", "")]),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "bdurable.cli", name, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGCONT)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def until(check: Any, timeout: float = 60.0, interval: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


async def registered(client: Client, name: str) -> None:
    async def seen() -> bool:
        live = await client.store.redis.zcard(client.keys.shard(0).live(name))
        return bool(live)

    await until(seen, timeout=30, interval=0.05)


async def bus_ready(client: Client) -> None:
    async def alive() -> bool:
        return bool(await client.store.redis.zcard(client.keys.shard(0).bus_alive))

    await until(alive, timeout=30, interval=0.05)


async def count_status(client: Client, status: str) -> int:
    return (await client.reads.counts())[status]


# -- measurements -----------------------------------------------------------------------------------------


async def latency(settings: Settings, samples: int, warmup: int = 10) -> dict[str, float]:
    """send_event -> the next task starts, one event at a time, the workflow waiting each time."""
    rounds = samples + warmup
    key = f"bench:{settings.prefix}:stamps"  # the benchmark app's own key, outside the engine's
    async with Client(settings=settings) as client:
        with (
            role(settings, "dispatcher", "--app", "bench_bus"),
            role(settings, "scheduler"),
            role(settings, "signal-bus"),
        ):
            await registered(client, "bus_echo")
            await bus_ready(client)
            handle = await client.start("bus_echo", {"rounds": rounds, "key": key})
            redis_ = client.store.redis
            latencies = []
            for n in range(rounds):

                async def waiting(n: int = n) -> bool:
                    state = await client.get_state(handle.workflow_id)
                    return state is not None and state.status == "AWAITING_EVENT" and state.step == 2 * n

                await until(waiting, timeout=10)
                await asyncio.sleep(0.002 * (n % 5))  # vary the phase against the roles' loops
                sent = time.time()
                await client.send_event(handle.workflow_id, "go", n)
                popped = await redis_.brpop([key], timeout=10)
                assert popped is not None, "the task did not start within 10 s"
                number, started = json.loads(popped[1])
                assert number == n
                latencies.append((started - sent) * 1000)
            await handle.result(timeout=10)
    latencies = latencies[warmup:]
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99), "max_ms": max(latencies)}


async def _start_waiters(client: Client, count: int, **input: Any) -> list[str]:
    """Start ``count`` waiting workflows; return once every one of them waits."""
    target = await count_status(client, "AWAITING_EVENT") + count
    ids = [f"w{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    for chunk in range(0, count, 500):
        await asyncio.gather(
            *(client.start("bus_wait", input, workflow_id=workflow_id) for workflow_id in ids[chunk : chunk + 500])
        )

    async def all_waiting() -> bool:
        return await count_status(client, "AWAITING_EVENT") >= target

    await until(all_waiting, timeout=120, interval=0.05)
    return ids


@contextmanager
def paused(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGSTOP the bus while messages pile up; the body's end resumes it (SIGCONT)."""
    os.killpg(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGCONT)


async def throughput(settings: Settings, count: int) -> dict[str, float]:
    """The bus draining ``count`` queued messages: events waking waiters, events buffered, one publish."""
    figures: dict[str, float] = {}
    async with Client(settings=settings) as client:
        with role(settings, "signal-bus") as bus:
            await bus_ready(client)
            with role(settings, "dispatcher", "--app", "bench_bus", "--concurrency", "200") as dispatcher:
                await registered(client, "bus_wait")
                ids = await _start_waiters(client, count)
                buffer_id = (await _start_waiters(client, 1, name="never"))[0]
                key = uuid.uuid4().hex
                await _start_waiters(client, count, name="paid", key=key)
                stop(dispatcher)  # from here on only the bus works: nothing else competes for Redis

            # N events to N waiting workflows: each delivery wakes one (its step is queued).
            before = await count_status(client, "RUNNING")
            with paused(bus):
                for chunk in range(0, count, 500):
                    await asyncio.gather(*(client.send_event(i, "go", {"n": 1}) for i in ids[chunk : chunk + 500]))
                began = time.perf_counter()

            async def woken() -> bool:
                return await count_status(client, "RUNNING") >= before + count

            await until(woken)
            figures["wake_per_s"] = count / (time.perf_counter() - began)

            # N events to one workflow that waits for something else: each is buffered.
            events = client.keys.shard(0).events(buffer_id)
            with paused(bus):
                for chunk in range(0, count, 500):
                    await asyncio.gather(
                        *(client.send_event(buffer_id, "go", {"n": n}) for n in range(chunk, min(count, chunk + 500)))
                    )
                began = time.perf_counter()

            async def buffered() -> bool:
                return int(await client.store.redis.llen(events)) >= count

            await until(buffered)
            figures["buffer_per_s"] = count / (time.perf_counter() - began)

            # One keyed publish waking N waiters (one message, applied 25 waiters per script call), while
            # another client pings Redis: how long does any other command wait meanwhile?
            before = await count_status(client, "RUNNING")
            waits: list[float] = []
            pinging = True

            async def ping() -> None:
                other = aioredis.Redis.from_url(settings.redis_url)
                try:
                    while pinging:
                        sent = time.perf_counter()
                        await other.ping()
                        waits.append(time.perf_counter() - sent)
                finally:
                    await other.aclose()

            # Redis's own view as well: every command that ran longer than 1 ms meanwhile (SLOWLOG), which is
            # what another client waits behind; the PING figures add this process's own scheduling on busy cores.
            redis = client.store.redis
            threshold = await redis.config_get("slowlog-log-slower-than")
            await redis.config_set("slowlog-log-slower-than", 1000)
            await redis.slowlog_reset()
            pinger = asyncio.create_task(ping())
            with paused(bus):
                woken_count = await client.publish_event("paid", {"ok": True}, key=key)
                assert woken_count == count, woken_count
                began = time.perf_counter()
            await until(woken)
            figures["publish_s"] = time.perf_counter() - began
            figures["publish_woken"] = woken_count
            pinging = False
            await pinger
            slow = [entry["duration"] / 1000 for entry in await redis.slowlog_get(10_000)]
            await redis.config_set("slowlog-log-slower-than", str(threshold["slowlog-log-slower-than"]))
            figures["publish_longest_command_ms"] = max(slow, default=0.0)
            figures["publish_commands_over_5ms"] = sum(1 for ms in slow if ms > 5)
            figures["publish_max_other_ms"] = max(waits) * 1000
            figures["publish_p99_other_ms"] = percentile(waits, 99) * 1000
    return figures


def fmt(value: float) -> str:
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


async def main(arguments: Any) -> None:
    with redis() as server:

        def fresh() -> Settings:
            return Settings(redis_url=server.url, prefix=f"b{uuid.uuid4().hex[:8]}")

        rows: list[tuple[str, str, str]] = []
        lat = await latency(fresh(), arguments.samples)
        rows.append(
            (
                "send_event -> next task starts, p50 / p99 (ms)",
                f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}",
                f"{arguments.samples} samples, max {lat['max_ms']:.1f} ms",
            )
        )
        out = await throughput(fresh(), arguments.events)
        n = arguments.events
        rows.append(("bus: events/s waking waiting workflows", fmt(out["wake_per_s"]), f"{n} events, {n} workflows"))
        rows.append(("bus: events/s buffered (nobody waiting)", fmt(out["buffer_per_s"]), f"{n} events, one workflow"))
        rows.append(
            (
                "bus: one keyed publish waking N waiters (ms)",
                f"{out['publish_s'] * 1000:.1f}",
                f"{int(out['publish_woken'])} woken by one message, 25 per script call",
            )
        )
        rows.append(
            (
                "bus: longest Redis command during that publish (ms)",
                f"{out['publish_longest_command_ms']:.2f}",
                f"Redis SLOWLOG; {int(out['publish_commands_over_5ms'])} command(s) over 5 ms; target: none over 5 ms",
            )
        )
        rows.append(
            (
                "bus: another client's PING during that publish, p99 / max (ms)",
                f"{out['publish_p99_other_ms']:.2f} / {out['publish_max_other_ms']:.2f}",
                "measured in Python, on cores the bus and Redis keep busy",
            )
        )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>14}  notes")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>14}  {note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200, help="latency samples")
    parser.add_argument("--events", type=int, default=5000, help="events per throughput run")
    asyncio.run(main(parser.parse_args()))
