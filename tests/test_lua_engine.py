"""The Lua transitions at unit level: script-cache loss (NOSCRIPT), lease fencing of commits, direct hand-off."""

from __future__ import annotations

import asyncio
import json

import engine_app
from support import InProcessRoles

from bdurable import Client, Status
from bdurable.keys import Keys, ShardKeys
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
    assert result == ["ok", []]
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
    task_step = long_task_step("fencing")
    committed = await store.shard_script("commit_step", shard, WORKER_A, "fenced-task", step[2], 0, task_step, 1000)
    assert committed == ["ok", []]
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


def long_task_step(argument: str) -> str:
    """The step a ``drain_flow`` workflow commits when it calls ``long_task(argument)``."""
    return json.dumps(
        {
            "calls": [
                {
                    "seq": 1,
                    "kind": "task",
                    "name": "engine_app.long_task",
                    "rec": json.dumps({"k": "task", "n": "engine_app.long_task"}),
                    "args": json.dumps({"args": [argument], "kwargs": {}}),
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


# -- direct hand-off ----------------------------------------------------------------------------------

WORKER_B = "worker-b"


async def listen(store: Store, shard: ShardKeys, worker: str, *ready_lists: str) -> None:
    """Register ``worker`` as listening to ``ready_lists`` (what a dispatcher's heartbeat does)."""
    await store.shard_script("beat_shard", shard, worker, 10_000, 0, *ready_lists)


async def first_step(store: Store, shard: ShardKeys, worker: str, workflow_id: str) -> str:
    """Claim the first step of a started ``drain_flow`` workflow; returns its lease."""
    [step] = await store.shard_script("claim", shard, worker, 1, shard.step_queue("default", "drain_flow", "1"))
    assert step[:2] == ["w", workflow_id]
    return str(step[2])


async def test_a_commit_hands_off_the_oldest_ready_work_on_lists_its_dispatcher_listens_to(
    client: Client, prefix: str
) -> None:
    shard = Keys(prefix).shard(0)
    store, redis = client.store, client.store.redis
    tasks = shard.task_queue("default", "engine_app.long_task")
    await listen(store, shard, WORKER_A, tasks)
    for workflow_id in ("older", "newer"):
        await client.start(engine_app.drain_flow, {"token": workflow_id}, workflow_id=workflow_id)

    # worker B does not listen to the task list: its commit leaves the task there, with a wake-up token
    lease = await first_step(store, shard, WORKER_B, "older")
    assert await store.shard_script(
        "commit_step", shard, WORKER_B, "older", lease, 0, long_task_step("o"), 1000, 1
    ) == [
        "ok",
        [],
    ]
    assert await redis.lrange(tasks, 0, -1) == ["t|older|1"]
    assert await redis.llen(shard.wake(tasks)) == 1

    # worker A listens to it: its commit claims the oldest ready task (B's, first in line), not its own
    lease = await first_step(store, shard, WORKER_A, "newer")
    status, [claim] = await store.shard_script(
        "commit_step", shard, WORKER_A, "newer", lease, 0, long_task_step("n"), 1000, 1
    )
    assert status == "ok"
    assert claim[:3] == ["t", "older", "1"]
    fields = dict(zip(claim[4::2], claim[5::2], strict=True))
    assert (fields["attempt"], fields["lease"]) == ("1", str(claim[3]))
    assert await redis.hget(shard.processing(WORKER_A), "t|older|1") == str(claim[3])
    assert await redis.lrange(tasks, 0, -1) == ["t|newer|1"]  # still ready for anyone, still signalled
    assert await redis.llen(shard.wake(tasks)) == 1

    # a budget of 0 (the dispatcher is draining, or runs a suspect alone) hands nothing off
    await client.start(engine_app.drain_flow, {"token": "third"}, workflow_id="third")
    lease = await first_step(store, shard, WORKER_A, "third")
    assert await store.shard_script(
        "commit_step", shard, WORKER_A, "third", lease, 0, long_task_step("t"), 1000, 0
    ) == [
        "ok",
        [],
    ]
    assert await redis.lrange(tasks, 0, -1) == ["t|third|1", "t|newer|1"]

    # a suspect (marked twice by the reaper) is never handed off: only a claim can give it out alone
    await redis.hset(shard.task("newer", 1), "suspect", 2)
    await client.start(engine_app.drain_flow, {"token": "fourth"}, workflow_id="fourth")
    lease = await first_step(store, shard, WORKER_A, "fourth")
    step = long_task_step("f")
    assert await store.shard_script("commit_step", shard, WORKER_A, "fourth", lease, 0, step, 1000, 5) == ["ok", []]
    assert await redis.lrange(tasks, 0, -1) == ["t|fourth|1", "t|third|1", "t|newer|1"]
    assert await redis.llen(shard.wake(tasks)) == 1
    [suspect] = await store.shard_script("claim", shard, WORKER_A, 5, tasks)
    assert suspect[:3] == ["T", "newer", "1"]  # claimed alone, flagged


async def test_a_task_commit_hands_off_the_workflows_next_step_and_clears_the_wake_up_token(
    client: Client, prefix: str
) -> None:
    shard = Keys(prefix).shard(0)
    store, redis = client.store, client.store.redis
    steps = shard.step_queue("default", "drain_flow", "1")
    tasks = shard.task_queue("default", "engine_app.long_task")
    await listen(store, shard, WORKER_A, steps, tasks)
    await client.start(engine_app.drain_flow, {"token": "chain"}, workflow_id="chain")
    lease = await first_step(store, shard, WORKER_A, "chain")
    status, [task] = await store.shard_script(
        "commit_step", shard, WORKER_A, "chain", lease, 0, long_task_step("c"), 1000, 1
    )
    assert (status, task[:3]) == ("ok", ["t", "chain", "1"])
    assert await redis.llen(shard.wake(tasks)) == 0  # nothing left to wake another dispatcher for

    entry = '{"seq":1,"ok":true,"v":"done"}'
    status, [step] = await store.shard_script("commit_task", shard, WORKER_A, "chain", 1, task[3], "ok", entry, 0, 1)
    assert status == "ok"
    assert step[:2] == ["w", "chain"]
    assert step[7] == 0  # A committed the step before: its cached run is current, only new entries follow
    assert step[9 : step.index("|")] == [entry]  # the task's result travels with the claim
    assert await redis.hget(shard.processing(WORKER_A), "w|chain") == str(step[2])
    assert await redis.llen(steps) == 0
    assert await redis.llen(shard.wake(steps)) == 0

    # the workflow's state says the next step runs, exactly as after an ordinary claim
    state = await client.get_state("chain")
    assert state is not None
    assert state.status == Status.RUNNING
    assert state.step == 1
