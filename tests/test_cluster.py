"""The engine on a real 3-master Redis Cluster, with the keyspace split into shards across its slots.

Children, events and cancellations cross shards through the signal bus's queue hop; every script touches
one slot. The same scenarios on a single Redis with several shards check the hop logic without a cluster.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import cluster_app
import pytest
from support import LocalCluster, RoleProcesses, eventually

from bdurable import Client, Settings, Worker, WorkflowCancelledError
from bdurable.embedded import RedisServer

SHARDS = 6


def roles(settings: Settings, *names: str) -> Worker:
    """The roles ``names`` in this process (``cluster_app``'s workflows for a dispatcher, 20 at once)."""
    return Worker([cluster_app], settings=settings, roles=names, concurrency=20)


@pytest.fixture(params=["cluster", "single-redis"])
def sharded(request: pytest.FixtureRequest, redis_server: RedisServer) -> Settings:
    url = request.getfixturevalue("redis_cluster").url if request.param == "cluster" else redis_server.url
    return Settings(
        redis_url=url,
        prefix=f"c{uuid.uuid4().hex[:8]}",
        shards=SHARDS,
        heartbeat_interval=0.2,
        heartbeat_timeout=1.0,
    )


async def test_children_events_signals_and_timers_across_shards(sharded: Settings) -> None:
    async with roles(sharded, "scheduler", "signal_bus", "reaper", "dispatcher"), Client(settings=sharded) as client:
        ids = [f"fan-{i}" for i in range(8)]
        assert len({client.keys.shard_of(i) for i in ids}) > 1  # the workflows really spread over shards
        for workflow_id in ids:
            await client.start(cluster_app.fan, 4, workflow_id=workflow_id)
        for workflow_id in ids:
            await eventually(lambda w=workflow_id: _status_is(client, w, "AWAITING_EVENT"), timeout=20)
            await client.send_event(workflow_id, "go", {"by": workflow_id})
        for workflow_id in ids:
            output = await client.result(workflow_id, timeout=20)
            assert output == {"children": [0, 2, 4, 6], "approval": {"by": workflow_id}}
            signals = [s async for s in client.signals(workflow_id)]
            assert [(s.name, s.payload) for s in signals] == [("children.done", {"count": 4})]
            child = await client.get_state(f"{workflow_id}-c3")
            assert child is not None
            assert (child.parent_id, child.status) == (workflow_id, "COMPLETED")
        page = await client.list(name="fan", limit=5)
        second = await client.list(name="fan", limit=5, cursor=page.next_cursor)
        listed = [s.workflow_id for s in page.items + second.items]
        assert sorted(listed) == sorted(ids)
        assert second.next_cursor is None


async def test_cancel_cascades_to_a_child_in_another_shard(sharded: Settings) -> None:
    async with roles(sharded, "scheduler", "signal_bus", "dispatcher"), Client(settings=sharded) as client:
        shard_of = client.keys.shard_of
        parent = next(f"p{i}" for i in range(100) if shard_of(f"p{i}") != shard_of(f"p{i}-stuck"))
        await client.start(cluster_app.parent_of_stuck, 1, workflow_id=parent)
        await eventually(lambda: _status_is(client, f"{parent}-stuck", "RUNNING"), timeout=10)
        await client.cancel(parent, reason="stop")
        with pytest.raises(WorkflowCancelledError):
            await client.result(parent, timeout=10)
        assert (await client.get_state(parent)).output == "cleaned up"  # type: ignore[union-attr]
        with pytest.raises(WorkflowCancelledError):
            await client.result(f"{parent}-stuck", timeout=10)


async def test_a_crashed_dispatcher_is_recovered_on_every_shard(sharded: Settings, tmp_path: Path) -> None:
    processes = RoleProcesses(sharded, tmp_path)
    try:
        async with roles(sharded, "scheduler", "signal_bus", "reaper"), Client(settings=sharded) as client:
            doomed = processes.start("dispatcher", "--app", "cluster_app", "--concurrency", "20")
            ids = [f"leaf-{i}" for i in range(30)]
            await eventually(lambda: client.store.redis.zcard(client.keys.versions("leaf")), timeout=10)
            os.killpg(doomed.pid, signal.SIGKILL)  # dies without leaving: its heartbeat stops, its claims stay held
            doomed.wait(timeout=10)
            for i, workflow_id in enumerate(ids):
                await client.start(cluster_app.leaf, i, workflow_id=workflow_id)
            async with roles(sharded, "dispatcher"):
                results = [await client.result(w, timeout=20) for w in ids]
            assert results == [i * 2 for i in range(len(ids))]
    finally:
        processes.stop_all()


async def test_a_primary_frozen_for_seconds_loses_nothing_and_runs_nothing_twice(redis_cluster: LocalCluster) -> None:
    """One primary of three frozen (SIGSTOP: a paused VM, a partition) past the cluster's node timeout: its
    shards hang, then every node answers CLUSTERDOWN. No role stops, no result() waiter fails, no live
    dispatcher is reaped (a task would run twice), and every workflow finishes once the node is back."""
    settings = Settings(redis_url=redis_cluster.url, prefix=f"o{uuid.uuid4().hex[:8]}", shards=SHARDS,
                        heartbeat_interval=0.2, heartbeat_timeout=1.0)  # fmt: skip
    cluster_app.COUNTED.clear()
    async with roles(settings, "scheduler", "signal_bus", "reaper", "dispatcher"), Client(settings=settings) as client:
        ids = [f"paced-{i}" for i in range(24)]
        for i, workflow_id in enumerate(ids):
            await client.start(cluster_app.paced, i, workflow_id=workflow_id)
        waiters = [asyncio.create_task(client.result(workflow_id, timeout=120)) for workflow_id in ids]
        await eventually(lambda: len(cluster_app.COUNTED) >= 24, timeout=20)  # under way
        frozen = redis_cluster.nodes[1].process
        assert frozen is not None
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(4)  # past --cluster-node-timeout 2000: the others answer CLUSTERDOWN
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        await asyncio.to_thread(redis_cluster.wait_ok)
        for workflow_id in ids:
            await eventually(lambda w=workflow_id: _status_is(client, w, "AWAITING_EVENT"), timeout=60)
            await client.send_event(workflow_id, "go", None)
        assert await asyncio.gather(*waiters) == list(range(24))
        assert {(n, i): 1 for n in range(24) for i in range(6)} == cluster_app.COUNTED


async def _status_is(client: Client, workflow_id: str, status: str) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and state.status == status


def test_cluster_fixture_has_three_masters(redis_cluster: LocalCluster) -> None:
    import redis

    with redis.Redis(port=redis_cluster.nodes[0].port, decode_responses=True) as r:
        masters = [line for line in r.execute_command("CLUSTER", "NODES").splitlines() if "master" in line]
    assert len(masters) == 3
