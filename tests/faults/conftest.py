"""Fixtures of the fault suite; its helpers live in ``faultkit`` (this folder is put on ``sys.path``)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from support import RoleProcesses

from bdurable import Client, Settings
from bdurable.embedded import RedisServer, free_port

sys.path.insert(0, str(Path(__file__).parent))
sys.path.append(str(Path(__file__).parents[2]))  # the repository root, for the `examples` package

from faultkit import Fleet, OwnRedis


@pytest.fixture
def fleet(processes: RoleProcesses) -> Fleet:
    return Fleet(processes)


@pytest.fixture
async def raw(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A plain Redis client on the test's server, for audits and for planting faults."""
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def own_redis(tmp_path: Path, prefix: str) -> AsyncIterator[OwnRedis]:
    """A private redis-server (AOF, ``appendfsync always``) on a fixed port, its data kept across kills."""
    server = RedisServer(port=free_port(), data_dir=str(tmp_path / "redis"), appendfsync="always")
    server.start()
    settings = Settings(redis_url=server.url, prefix=prefix, heartbeat_interval=0.2, heartbeat_timeout=1.0)
    processes = RoleProcesses(settings, tmp_path)
    client = Client(settings=settings)
    await client.connect()
    raw_client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    own = OwnRedis(server, settings, Fleet(processes), client, raw_client)
    try:
        yield own
    finally:
        processes.stop_all()
        if server.process is not None and server.process.poll() is None:
            own.thaw()
        with suppress(Exception):
            await client.close()
        with suppress(Exception):
            await raw_client.aclose()
        server.stop()
