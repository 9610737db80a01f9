"""BDURABLE_WAIT_REPLICAS: commits wait for real replicas (Redis ``WAIT``), and say so when there are too few.

A primary and one replica (``--replicaof``), both real redis-server processes on free loopback ports.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
import redis
import security_app
from support import InProcessRoles

from bdurable import Client, ReplicationError, Settings, Status
from bdurable.embedded import RedisServer
from bdurable.keys import Keys
from bdurable.store import WAIT_TIMEOUT_MS


@dataclasses.dataclass
class Replicated:
    primary: RedisServer
    replica: RedisServer


def wait_until_in_sync(primary: RedisServer, replica: RedisServer, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with (
        redis.Redis(port=primary.port, decode_responses=True) as up,
        redis.Redis(port=replica.port, decode_responses=True) as down,
    ):
        while time.monotonic() < deadline:
            if (
                down.info("replication").get("master_link_status") == "up"
                and up.info("replication").get("connected_slaves") == 1
            ):
                return
            time.sleep(0.05)
    raise AssertionError(f"the replica did not sync with the primary within {timeout}s")


@pytest.fixture(scope="module")
def replicated() -> Iterator[Replicated]:
    # No diskless-sync delay: the first full sync starts at once instead of after 5 s.
    with RedisServer(extra=["--repl-diskless-sync-delay", "0"]) as primary:
        replica = RedisServer(appendonly=False, extra=["--replicaof", "127.0.0.1", str(primary.port)])
        with replica:
            wait_until_in_sync(primary, replica)
            yield Replicated(primary, replica)


def wait_calls(server: RedisServer) -> int:
    with redis.Redis(port=server.port, decode_responses=True) as conn:
        stats: dict[str, dict[str, int]] = conn.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


def on_primary(settings: Settings, server: Replicated, replicas: int) -> Settings:
    return dataclasses.replace(settings, redis_url=server.primary.url, wait_replicas=replicas)


async def test_a_finished_workflow_is_on_the_replica_when_its_result_returns(
    replicated: Replicated, settings: Settings
) -> None:
    settings = on_primary(settings, replicated, 1)
    waits_before = wait_calls(replicated.primary)
    roles = InProcessRoles(settings)
    try:
        roles.dispatcher(security_app)
        roles.scheduler()
        async with Client(settings=settings) as client:
            handle = await client.start(security_app.short, "replicated")
            assert await handle.result(timeout=10) == "REPLICATED"
            # Read the replica directly, at once: no polling, the commit itself waited for it.
            key = Keys(settings.prefix).for_workflow(handle.workflow_id).wf(handle.workflow_id)
            with redis.Redis(port=replicated.replica.port, decode_responses=True) as replica:
                assert replica.hmget(key, "status", "output") == [Status.COMPLETED, '"REPLICATED"']
    finally:
        await roles.stop_all()
    # start, the steps' and the task's commits, the timer: each write went through WAIT
    assert wait_calls(replicated.primary) - waits_before >= 4


async def test_too_few_replicas_fail_the_start_with_a_clear_error_in_bounded_time(
    replicated: Replicated, settings: Settings
) -> None:
    async with Client(settings=on_primary(settings, replicated, 2)) as client:
        began = time.monotonic()
        with pytest.raises(ReplicationError, match="BDURABLE_WAIT_REPLICAS") as error:
            await client.start(security_app.short, "unreplicated")
        waited = time.monotonic() - began
    assert "only 1 of 2 replicas" in str(error.value)
    assert isinstance(error.value, ConnectionError)  # callers treat it as an outage and retry
    assert WAIT_TIMEOUT_MS / 1000 - 0.5 <= waited <= WAIT_TIMEOUT_MS / 1000 + 3
