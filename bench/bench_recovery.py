"""Recovery time: from SIGKILL of the dispatcher running a task to that task running on another dispatcher.

``python bench/bench_recovery.py`` runs two dispatchers, a scheduler and a reaper as separate processes with a
short heartbeat (interval 0.5 s, timeout 2 s), kills the dispatcher holding a task, and times how long until
the task starts again elsewhere. Expected: heartbeat timeout + up to one reaper pass + the retry backoff
(the killed attempt counts as failed; first retry after 200 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace

sys.path.insert(0, os.path.dirname(__file__))

from harness import percentile, redis

from bdurable import Client, Settings

BENCH = os.path.dirname(os.path.abspath(__file__))


def spawn_role(role: str, settings: Settings) -> subprocess.Popen[bytes]:
    """A role as a real ``bdurable`` process (the dispatcher runs bench_app)."""
    env = dict(os.environ)
    env.update(
        BDURABLE_REDIS_URL=settings.redis_url,
        BDURABLE_PREFIX=settings.prefix,
        BDURABLE_HEARTBEAT_INTERVAL=str(settings.heartbeat_interval),
        BDURABLE_HEARTBEAT_TIMEOUT=str(settings.heartbeat_timeout),
        BDURABLE_LOG_LEVEL="warning",
        PYTHONPATH=os.pathsep.join([BENCH, env.get("PYTHONPATH", "")]),
    )
    args = ["--app", "bench_app"] if role == "dispatcher" else []
    return subprocess.Popen(
        [sys.executable, "-m", "bdurable.cli", role, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def measure(settings: Settings, url: str, rounds: int) -> list[float]:
    samples = []
    async with Client(settings=settings) as client:
        dispatchers = [spawn_role("dispatcher", settings), spawn_role("dispatcher", settings)]
        others = [spawn_role("scheduler", settings), spawn_role("reaper", settings)]
        try:
            while not await client.store.redis.zcard(client.keys.versions("held")):  # noqa: ASYNC110 - polls Redis
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            for _ in range(rounds):
                key = f"recovery:{uuid.uuid4().hex}"
                await client.start("held", {"key": key, "url": url})
                first = await client.store.redis.blpop([key], timeout=30)
                assert first is not None, "the task never started"
                pid = int(first[1].split()[0])
                victim = next(p for p in dispatchers if p.pid == pid)
                killed_at = time.time()
                os.kill(pid, signal.SIGKILL)
                again = await client.store.redis.blpop([key], timeout=60)
                assert again is not None, "the task was not recovered"
                samples.append(float(again[1].split()[1]) - killed_at)
                victim.wait(10)
                dispatchers.remove(victim)
                dispatchers.append(spawn_role("dispatcher", settings))  # keep two dispatchers alive
                await asyncio.sleep(0.5)
        finally:
            for process in dispatchers + others:
                process.kill()
                process.wait(10)
    return samples


async def main(rounds: int) -> None:
    with redis() as server:
        settings = Settings(redis_url=server.url, prefix=f"r{uuid.uuid4().hex[:6]}")
        settings = replace(settings, heartbeat_interval=0.5, heartbeat_timeout=2.0)
        samples = await measure(settings, server.url, rounds)
    print(
        f"heartbeat timeout {settings.heartbeat_timeout:g} s, interval {settings.heartbeat_interval:g} s, "
        f"{rounds} kills"
    )
    print(
        f"recovery (kill -> task running elsewhere) p50 {percentile(samples, 50):.2f} s, "
        f"p99 {percentile(samples, 99):.2f} s, max {max(samples):.2f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    asyncio.run(main(parser.parse_args().rounds))
