"""Shared fixtures: a real redis-server per session on a free loopback port, a fresh key prefix per test.

No test assumes a server on 6379; nothing is flushed: tests are isolated by prefix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import InProcessRoles, LocalCluster, RoleProcesses

from bdurable import Client, Settings
from bdurable.embedded import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


# BDURABLE_TEST_TARGET=cluster runs the end-to-end suites against the real 3-master Redis Cluster with the
# keyspace split into 6 shards (`.ci/run` does, for the suites marked `cluster_e2e`).
TARGET = os.environ.get("BDURABLE_TEST_TARGET", "single")


@pytest.fixture
def settings(request: pytest.FixtureRequest, prefix: str) -> Settings:
    if TARGET == "cluster":
        url, shards = request.getfixturevalue("redis_cluster").url, 6
    else:
        url, shards = request.getfixturevalue("redis_server").url, 1
    return Settings(redis_url=url, prefix=prefix, shards=shards, heartbeat_interval=0.2, heartbeat_timeout=1.0)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(settings=settings) as c:
        yield c


@pytest.fixture
async def roles(settings: Settings) -> AsyncIterator[InProcessRoles]:
    started = InProcessRoles(settings)
    try:
        yield started
    finally:
        await started.stop_all()


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[RoleProcesses]:
    started = RoleProcesses(settings, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
