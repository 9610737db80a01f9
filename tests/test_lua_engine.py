"""The Lua transitions at unit level: script-cache loss (NOSCRIPT) and lease fencing of commits."""

from __future__ import annotations

import asyncio
import json

import engine_app
from support import InProcessRoles

from bdurable import Client, Status
from bdurable.keys import Keys
from bdurable.store import Store


async def test_engine_keeps_working_after_the_script_cache_is_flushed(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    roles.scheduler()
    warm = await client.start(engine_app.history_flow, {})
    assert await warm.result(timeout=5) == 6  # every role has loaded its scripts by now

    await client.store.redis.script_flush()  # what a Redis restart or failover does to the cache
    assert await client.store.redis.script_exists(client.store._scripts["start"].sha) == [False]

    after = await client.start(engine_app.history_flow, {})  # client, dispatcher and scheduler scripts
    assert await after.result(timeout=8) == 6

    # again, with calls that share one pipelined round trip (the batch path of the reload)
    await client.store.redis.script_flush()
    batch = await asyncio.gather(*(client.start(engine_app.quick, i) for i in range(10)))
    assert await asyncio.gather(*(h.result(timeout=5) for h in batch)) == list(range(10))


# -- lease fencing ----------------------------------------------------------------------------------------

WORKER_A = "worker-a"


def sleep_step(seq: int = 1) -> str:
    """The step a workflow commits when its code reached ``await ctx.sleep(60)``."""
    record = json.dumps({"k": "sleep", "n": "60s"})
    return json.dumps(
        {
            "calls": [{"seq": seq, "kind": "sleep", "name": "60s", "rec": record, "delay_ms": 60_000}],
            "status": "SLEEPING",
            "waiting_on": "timer 60s",
            "outcome": None,
            "abandon": [],
            "cancelled": [],
        }
    )


async def claim_one(store: Store, keys: Keys, worker: str) -> list[str]:
    ready = keys.shard(0).step_queue("default", "sleeper", "1")
    claims = await store.shard_script("claim", keys.shard(0), worker, 10, ready)
    assert len(claims) == 1
    return list(claims[0])


async def snapshot(client: Client, keys: Keys, workflow_id: str) -> tuple[object, ...]:
    shard = keys.shard(0)
    redis = client.store.redis
    return (
        await redis.hgetall(shard.wf(workflow_id)),
        await redis.hgetall(shard.calls(workflow_id)),
        await redis.lrange(shard.inbox(workflow_id), 0, -1),
        await redis.zrange(shard.timers, 0, -1, withscores=True),
        await redis.hgetall(shard.processing(WORKER_A)),
    )


async def test_a_commit_with_a_stale_lease_is_rejected_and_changes_nothing(client: Client, prefix: str) -> None:
    keys = Keys(prefix)
    shard = keys.shard(0)
    store = client.store
    await client.start(engine_app.sleeper, {"sleep": "60s"}, workflow_id="fenced")
    claim = await claim_one(store, keys, WORKER_A)
    assert claim[:2] == ["w", "fenced"]
    lease = str(claim[2])
    assert await store.redis.hget(shard.wf("fenced"), "lease") == lease

    # another dispatcher took the workflow over meanwhile: its claim bumped the lease
    await store.redis.hset(shard.wf("fenced"), "lease", "999")
    before = await snapshot(client, keys, "fenced")
    result = await store.shard_script("commit_step", shard, WORKER_A, "fenced", lease, 0, sleep_step(), 60_000)
    assert result == ["stale"]
    assert await snapshot(client, keys, "fenced") == before  # no call, no timer, no status change

    # the control case: with the lease it was given, the same commit lands
    await store.redis.hset(shard.wf("fenced"), "lease", lease)
    result = await store.shard_script("commit_step", shard, WORKER_A, "fenced", lease, 0, sleep_step(), 60_000)
    assert result == ["ok"]
    state = await client.get_state("fenced")
    assert state is not None
    assert state.status == Status.SLEEPING
    assert await store.redis.zcard(shard.timers) == 1
    assert await store.redis.hget(shard.calls("fenced"), "1") is not None
    # and a second, replayed commit of the same step is refused: the claim was used up
    again = await store.shard_script("commit_step", shard, WORKER_A, "fenced", lease, 0, sleep_step(), 60_000)
    assert again == ["stale"]


async def test_a_task_commit_with_a_stale_lease_is_rejected(client: Client, prefix: str) -> None:
    keys = Keys(prefix)
    shard = keys.shard(0)
    store = client.store
    await client.start(engine_app.drain_flow, {"token": "fencing"}, workflow_id="fenced-task")
    ready = shard.step_queue("default", "drain_flow", "1")
    [step] = await store.shard_script("claim", shard, WORKER_A, 10, ready)
    task_step = json.dumps(
        {
            "calls": [
                {
                    "seq": 1,
                    "kind": "task",
                    "name": "engine_app.long_task",
                    "rec": json.dumps({"k": "task", "n": "engine_app.long_task"}),
                    "args": json.dumps({"args": ["fencing"], "kwargs": {}}),
                    "queue": "default",
                    "max_attempts": 3,
                    "backoff_ms": 1000,
                    "timeout_ms": 0,
                    "on_exhausted": "raise",
                }
            ],
            "status": "RUNNING",
            "waiting_on": "task engine_app.long_task",
            "outcome": None,
            "abandon": [],
            "cancelled": [],
        }
    )
    committed = await store.shard_script("commit_step", shard, WORKER_A, "fenced-task", step[2], 0, task_step, 1000)
    assert committed == ["ok"]
    task_list = await ready_list_holding(client, shard.tag, "t|fenced-task|1")
    [task_claim] = await store.shard_script("claim", shard, WORKER_A, 10, task_list)
    assert task_claim[:3] == ["t", "fenced-task", "1"]
    lease = str(task_claim[3])
    await store.redis.hset(shard.task("fenced-task", 1), "lease", "999")  # handed to someone else
    entry = '{"seq":1,"ok":true,"v":"finished"}'
    result = await store.shard_script("commit_task", shard, WORKER_A, "fenced-task", 1, lease, "ok", entry, 0)
    assert result == ["stale"]
    assert await store.redis.lrange(shard.inbox("fenced-task"), 0, -1) == []
    assert await store.redis.hget(shard.calls("fenced-task"), "1:s") == "pending"
    state = await client.get_state("fenced-task")
    assert state is not None
    assert state.step == 0


async def ready_list_holding(client: Client, tag: str, item: str) -> str:
    """The task ready list the commit put ``item`` on (however task lists are split up)."""
    redis = client.store.redis
    pattern = f"{tag}:q:*".replace("{", "\\{").replace("}", "\\}")
    async for key in redis.scan_iter(match=pattern, _type="list"):
        if item in await redis.lrange(key, 0, -1):
            return str(key)
    raise AssertionError(f"{item} is on no task ready list")
