"""The web console's workflow list on a big Redis: ``python bench/bench_console.py`` prints a table.

1. Loads N finished workflows (default 1,000,000: COMPLETED, FAILED and CANCELLED, four names, two versions,
   created over the past week) into a fresh local server. The loader is a Lua script made of the engine's own
   library (``bdurable.lua``: the key helpers generated from ``bdurable.keys``, ``lib.lua``) plus a short loop that
   creates each workflow as the ``start`` script's ``create_workflow`` does (minus queueing its first step) and
   ends it with the engine's own ``finish_workflow``: the hash, the status and id indexes and the expiry index are
   exactly what the engine writes (about a minute for a million).
2. Serves the console (``bdurable console --read-only``, its own process, on a free loopback port) and times
   ``GET /api/workflows`` over real HTTP, one request at a time, for each filter the page offers (status, name,
   version, id prefix, creation time, the cursor pages), plus the overview and the list page itself.

The list reads the indexes only (``reads.page``: ZREVRANGEBYSCORE per (status, version) index, or ZRANGEBYLEX on
the id index with a prefix), never a scan, so its time should not grow with N.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from harness import LOGS, percentile  # noqa: E402

from bdurable import Client, Settings  # noqa: E402
from bdurable.embedded import RedisServer  # noqa: E402
from bdurable.lua import load_scripts  # noqa: E402

NAMES = ("checkout", "onboarding", "report", "refund")
DAY_MS = 86_400_000
BATCH = 2_000

# The loop of the loader; everything it calls is the engine's (lib.lua and the generated key helpers).
LOADER_BODY = """
-- ---- bench_console loader ----
-- KEYS[1] T; ARGV: G, first, count, total, now, retention_ms
local first, count, total = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now, retention = tonumber(ARGV[5]), tonumber(ARGV[6])
local names = {'checkout', 'onboarding', 'report', 'refund'}
local week = 7 * 86400000
local error_json = cjson.encode({type = 'RuntimeError', message = 'card declined',
  traceback = 'Traceback (most recent call last):\\n  ...\\nRuntimeError: card declined'})
for i = first, first + count - 1 do
  local name = names[(i % 4) + 1]
  local version = (i % 3 == 0) and '2.0' or '1.0'
  local id = string.format('%s-%07d', name, i)
  local created = now - week + math.floor(i * (week / total))
  local wf = k_wf(id)
  -- as create_workflow (start.lua) writes a new run, without queueing its first step
  redis.call('HSET', wf, 'name', name, 'version', version, 'queue', 'default', 'input',
    '{"order_id":"' .. id .. '","amount":' .. (i % 9973) .. '}', 'status', 'RUNNING', 'step', '3',
    'created_at', created, 'updated_at', created)
  redis.call('ZADD', k_index('RUNNING', version, name), created, id)
  redis.call('SADD', K_KINDS, kind_member(name, version))
  redis.call('ZADD', K_IDS, 0, id)
  -- and as the engine ends one
  local r = i % 20
  if r == 0 then
    finish_workflow(id, 'FAILED', '', error_json, retention, created + 1500)
  elseif r == 1 then
    finish_workflow(id, 'CANCELLED', '', '', retention, created + 1500)
  else
    finish_workflow(id, 'COMPLETED', '{"tracking":"T-' .. i .. '"}', '', retention, created + 1500)
  end
end
return count
"""


def loader_source() -> str:
    """The engine's script prelude and library (as ``start`` is sent), then the loader's loop."""
    start = load_scripts()["start"].source
    library, marker, _ = start.partition("-- ---- start.lua ----")
    assert marker, "bdurable.lua no longer marks where a script begins: update the loader"
    return library + LOADER_BODY


async def load(settings: Settings, total: int) -> float:
    began = time.perf_counter()
    async with Client(settings=settings) as client:  # records the shard count, loads the engine's scripts
        shard = client.keys.shard(0)
        redis: aioredis.Redis = client.store.redis
        loader = redis.register_script(loader_source())
        now = await client.reads.now_ms()
        for first in range(0, total, BATCH):
            count = min(BATCH, total - first)
            await loader(keys=[shard.tag], args=[client.keys.tag, first, count, total, now, 7 * DAY_MS])
            if first and first % 100_000 == 0:
                print(f"  loaded {first:,} ({first / (time.perf_counter() - began):,.0f}/s)", flush=True)
        counts = await client.reads.counts()
    assert sum(counts.values()) == total, counts
    return time.perf_counter() - began


async def timed(http: httpx.AsyncClient, path: str, params: dict[str, str], requests: int) -> tuple[list[float], Any]:
    samples, body = [], None
    for _ in range(requests):
        began = time.perf_counter()
        response = await http.get(path, params=params)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (path, params, response.text[:300])
        body = response.json() if path.startswith("/api/") else None
    return samples, body


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def console_port(log: Path) -> int | None:
    """The port in the console's ``console listening`` log line (JSON), once it is written."""
    for line in log.read_text(errors="replace").splitlines():
        if '"console listening"' in line:
            return int(json.loads(line)["url"].rpartition(":")[2])
    return None


async def serve_console(settings: Settings) -> tuple[asyncio.subprocess.Process, int]:
    """``bdurable console --read-only --port 0`` with ``settings`` in its environment; its port once Redis answers."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{settings.prefix}-console.log"
    env = {name: value for name, value in os.environ.items() if not name.startswith("BDURABLE_")}
    for field in dataclasses.fields(Settings):
        if (value := getattr(settings, field.name)) is not None:
            env[f"BDURABLE_{field.name.upper()}"] = str(value)
    env["BDURABLE_LOG_FORMAT"] = "json"
    env.pop("BDURABLE_CONSOLE_TOKEN", None)
    with open(log, "wb") as output:  # noqa: ASYNC230  # a local file, opened once
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bdurable.cli", "console", "--read-only", "--port", "0",
            env=env, stdout=output, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while (port := console_port(log)) is None:
        if process.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the console did not start listening (see {log})")
        await asyncio.sleep(0.05)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        while (await http.get("/readyz")).status_code != 200:  # connected to Redis
            if time.monotonic() > deadline:
                raise RuntimeError(f"the console did not reach Redis (see {log})")
            await asyncio.sleep(0.05)
    return process, port


async def measure(settings: Settings, total: int, requests: int) -> list[tuple[str, str, list[float]]]:
    console, port = await serve_console(settings)
    now_ms = int(time.time() * 1000)
    mid = now_ms - 3 * DAY_MS
    scenarios: list[tuple[str, str, dict[str, str]]] = [
        ("no filter (newest first)", "/api/workflows", {}),
        ("status=COMPLETED", "/api/workflows", {"status": "COMPLETED"}),
        ("status=FAILED", "/api/workflows", {"status": "FAILED"}),
        ("name=checkout", "/api/workflows", {"name": "checkout"}),
        ("name=report, version=2.0", "/api/workflows", {"name": "report", "version": "2.0"}),
        ("status, name and version", "/api/workflows", {"status": "CANCELLED", "name": "refund", "version": "1.0"}),
        ("created within one hour", "/api/workflows", {"since": iso(mid), "until": iso(mid + 3_600_000)}),
        ("FAILED, created before 3 days ago", "/api/workflows", {"status": "FAILED", "until": iso(mid)}),
        ("id prefix checkout-00042", "/api/workflows", {"prefix": "checkout-00042"}),
        ("id prefix report-", "/api/workflows", {"prefix": "report-"}),
        ("limit=500, status=COMPLETED", "/api/workflows", {"status": "COMPLETED", "limit": "500"}),
        ("overview (/api/overview)", "/api/overview", {}),
        ("the list page (HTML), FAILED", "/workflows", {"status": "FAILED"}),
    ]
    results = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for label, path, params in scenarios:
                await timed(http, path, params, 3)  # warm up
                samples, _ = await timed(http, path, params, requests)
                results.append((label, path, samples))
            # 50 pages deep through status=COMPLETED with the cursor: every page costs the same
            samples, cursor = [], None
            for _ in range(50):
                params = {"status": "COMPLETED", **({"cursor": cursor} if cursor else {})}
                page_samples, body = await timed(http, "/api/workflows", params, 1)
                samples += page_samples
                cursor = body["next_cursor"]
            results.append(("status=COMPLETED, pages 1 to 50 (cursor)", "/api/workflows", samples))
    finally:
        console.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await console.wait()
    return results


async def main(total: int, requests: int) -> None:
    print(f"b-durable console: the workflow list with {total:,} finished workflows in Redis")
    with RedisServer() as server:
        settings = Settings(redis_url=server.url, prefix=f"bench{uuid.uuid4().hex[:6]}")
        seconds = await load(settings, total)
        async with Client(settings=settings) as client:
            info = await client.store.redis.info("memory")
        print(f"loaded in {seconds:.1f} s ({total / seconds:,.0f} workflows/s); Redis uses {info['used_memory_human']}")
        results = await measure(settings, total, requests)
    print()
    heading = "request (one at a time, over HTTP, 50 rows a page)"
    print(f"{heading:<52} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, _, samples in results:
        print(
            f"{label:<52} {len(samples):>5} {statistics.median(samples):>8.2f} {percentile(samples, 99):>8.2f}"
            f" {max(samples):>8.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=1_000_000, help="finished workflows to load")
    parser.add_argument("--requests", type=int, default=200, help="requests timed per filter")
    options = parser.parse_args()
    asyncio.run(main(options.workflows, options.requests))
