"""The Lua transitions through the store's typed calls: the function library and the scripts sent whole, loss of
our code on the server (a restart, a flush), lease fencing of commits,
the direct hand-off, and the order in which claims serve work (continuations before new starts, priorities)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import engine_app
from support import InProcessRoles, eventually

from bdurable import Client, Settings, Status
from bdurable.keys import Keys, ShardKeys
from bdurable.store import ReadyQueue, Store
from bdurable.wire import (
    CallRecord,
    SleepCommand,
    StepClaim,
    StepDocument,
    TaskClaim,
    TaskCommand,
    WorkItem,
)


async def lose_our_code(client: Client) -> None:
    """What a Redis restart without persistence, or a failover to an empty node, does: no functions, no scripts."""
    redis = client.store.redis
    await redis.function_flush()
    await redis.script_flush()
    assert await redis.function_list(library=client.store._library.name) == []


async def test_engine_keeps_working_after_the_server_loses_its_code(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    roles.scheduler()
    warm = await client.start(engine_app.history_flow, {})
    assert await warm.result(timeout=5) == 6  # every role has installed the function library by now
    assert client.store._by_function is True

    await lose_our_code(client)
    after = await client.start(engine_app.history_flow, {})  # client, dispatcher and scheduler scripts
    assert await after.result(timeout=8) == 6
    assert await client.store.redis.function_list(library=client.store._library.name) != []

    # again, with calls that share one pipelined round trip (the batch path of the reload)
    await lose_our_code(client)
    batch = await asyncio.gather(*(client.start(engine_app.quick, i) for i in range(10)))
    assert await asyncio.gather(*(h.result(timeout=5) for h in batch)) == list(range(10))


async def test_a_dispatcher_registers_again_when_the_server_lost_its_data(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    """A Redis restarted without persistence (or failed over to an empty node) has lost the registry too: the
    running dispatcher's next heartbeat notices and registers again, so starts by name work without a restart."""
    roles.dispatcher(engine_app)
    name, redis = engine_app.quick.name, client.store.redis

    async def registered() -> bool:
        return await redis.zcard(client.keys.versions(name)) == 1

    await eventually(registered, timeout=5)
    before = await client.start(name, 1)
    assert await before.result(timeout=5) == 1
    await redis.delete(*[key async for key in redis.scan_iter(match=f"*{settings.prefix}*")])
    await lose_our_code(client)
    assert not await registered()
    await eventually(registered, timeout=5)  # a heartbeat is 0.2 s here
    after = await client.start(name, 2)
    assert await after.result(timeout=5) == 2


async def test_without_function_rights_scripts_travel_whole(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    """An ACL user that may not load functions sends each script whole (EVALSHA), next to processes that call
    the library, on the same workflows; and it reloads its scripts after the cache is flushed."""
    password = uuid.uuid4().hex
    await client.store.redis.acl_setuser(
        "nofunctions", enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
        commands=["+@all", "-function"],
    )  # fmt: skip
    try:
        user_url = settings.redis_url.replace("redis://", f"redis://nofunctions:{password}@", 1)
        roles.dispatcher(engine_app)
        roles.scheduler()
        async with Client(settings=dataclasses.replace(settings, redis_url=user_url)) as restricted:
            first = await restricted.start(engine_app.history_flow, {})
            assert await first.result(timeout=5) == 6
            assert restricted.store._by_function is False
            await restricted.store.redis.script_flush()
            batch = await asyncio.gather(*(restricted.start(engine_app.quick, i) for i in range(10)))
            assert await asyncio.gather(*(h.result(timeout=5) for h in batch)) == list(range(10))
    finally:
        await client.store.redis.acl_deluser("nofunctions")


async def test_a_foreign_library_under_our_name_is_never_called(client: Client, settings: Settings) -> None:
    """A library named like ours whose code differs (loaded by someone else, before us) is not trusted: the
    store sends its scripts whole instead, and never replaces the other library."""
    redis = client.store.redis
    name = client.store._library.name
    await redis.function_flush()
    foreign = f"#!lua name={name}\nredis.register_function('{name}_start', function(keys, args) return 'owned' end)"
    await redis.function_load(foreign)
    try:
        async with Client(settings=settings) as fresh:
            handle = await fresh.start(engine_app.quick, 1)
            assert fresh.store._by_function is False
            assert await fresh.get_state(handle.workflow_id) is not None  # created by our own script
            [listed] = await redis.function_list(library=name, withcode=True)
            assert listed[listed.index("library_code") + 1] == foreign
    finally:
        await redis.function_flush()


# -- lease fencing ----------------------------------------------------------------------------------------

WORKER_A = "worker-a"
WORKER_B = "worker-b"


def sleep_step(seq: int = 1) -> StepDocument:
    """The step a workflow commits when its code reached ``await ctx.sleep(60)``."""
    record = CallRecord("sleep", "60s")
    return StepDocument([SleepCommand(seq, "60s", record, delay_ms=60_000)], "SLEEPING", "timer 60s", None)


def long_task_step(argument: str) -> StepDocument:
    """The step a ``drain_flow`` workflow commits when it calls ``long_task(argument)``."""
    name = "engine_app.long_task"
    args = f'{{"args":["{argument}"],"kwargs":{{}}}}'
    task = TaskCommand(1, name, CallRecord("task", name), args, "default", 3, 1000, 0, "raise")
    return StepDocument([task], "RUNNING", f"task {name}", None)


def steps_of(shard: ShardKeys, name: str) -> ReadyQueue:
    return ReadyQueue(shard.step_queue("default", name, "1"), shard.step_new("default", name, "1"))


def task_queue(shard: ShardKeys) -> ReadyQueue:
    return ReadyQueue(shard.task_queue("default", "engine_app.long_task"))


async def commit(
    store: Store, worker: str, workflow_id: str, lease: str, document: StepDocument, handoff: int = 0
) -> tuple[str, list[StepClaim | TaskClaim]]:
    reply = await store.commit_step(
        worker, workflow_id, lease=lease, based_on=0, document=document, retention_ms=60_000, handoff=handoff
    )
    return reply.status, reply.claims


async def first_step(store: Store, shard: ShardKeys, worker: str, name: str, workflow_id: str) -> str:
    """Claim the first step of a started workflow; returns its lease."""
    [step] = await store.claim(shard, worker, 1, [steps_of(shard, name)])
    assert isinstance(step, StepClaim)
    assert step.workflow_id == workflow_id
    return step.lease


async def snapshot(client: Client, shard: ShardKeys, workflow_id: str) -> tuple[object, ...]:
    redis = client.store.redis
    return (
        await redis.hgetall(shard.wf(workflow_id)),
        await redis.hgetall(shard.calls(workflow_id)),
        await redis.lrange(shard.inbox(workflow_id), 0, -1),
        await redis.zrange(shard.timers, 0, -1, withscores=True),
        await redis.hgetall(shard.processing(WORKER_A)),
    )


async def test_a_commit_with_a_stale_lease_is_rejected_and_changes_nothing(client: Client, prefix: str) -> None:
    shard = Keys(prefix).shard(0)
    store = client.store
    await client.start(engine_app.sleeper, {"sleep": "60s"}, workflow_id="fenced")
    lease = await first_step(store, shard, WORKER_A, "sleeper", "fenced")
    assert await store.redis.hget(shard.wf("fenced"), "lease") == lease

    # another dispatcher took the workflow over meanwhile: its claim bumped the lease
    await store.redis.hset(shard.wf("fenced"), "lease", "999")
    before = await snapshot(client, shard, "fenced")
    assert await commit(store, WORKER_A, "fenced", lease, sleep_step()) == ("stale", [])
    assert await snapshot(client, shard, "fenced") == before  # no call, no timer, no status change

    # the control case: with the lease it was given, the same commit lands
    await store.redis.hset(shard.wf("fenced"), "lease", lease)
    assert await commit(store, WORKER_A, "fenced", lease, sleep_step()) == ("ok", [])
    state = await client.get_state("fenced")
    assert state is not None
    assert state.status == Status.SLEEPING
    assert await store.redis.zcard(shard.timers) == 1
    assert await store.redis.hget(shard.calls("fenced"), "1") is not None
    # and a second, replayed commit of the same step is refused: the claim was used up
    assert await commit(store, WORKER_A, "fenced", lease, sleep_step()) == ("stale", [])


async def test_a_task_commit_with_a_stale_lease_is_rejected(client: Client, prefix: str) -> None:
    shard = Keys(prefix).shard(0)
    store = client.store
    await client.start(engine_app.drain_flow, {"token": "fencing"}, workflow_id="fenced-task")
    lease = await first_step(store, shard, WORKER_A, "drain_flow", "fenced-task")
    assert await commit(store, WORKER_A, "fenced-task", lease, long_task_step("fencing")) == ("ok", [])
    [task_claim] = await store.claim(shard, WORKER_A, 10, [task_queue(shard)])
    assert isinstance(task_claim, TaskClaim)
    assert (task_claim.workflow_id, task_claim.seq, task_claim.call.attempt) == ("fenced-task", 1, 1)
    await store.redis.hset(shard.task("fenced-task", 1), "lease", "999")  # handed to someone else
    reply = await store.commit_task(WORKER_A, task_claim, outcome="ok", payload='"finished"', delay_ms=0, handoff=0)
    assert reply.status == "stale"
    assert await store.redis.lrange(shard.inbox("fenced-task"), 0, -1) == []
    assert await store.redis.hget(shard.calls("fenced-task"), "1:s") == "pending"
    state = await client.get_state("fenced-task")
    assert state is not None
    assert state.step == 0


async def test_the_reaper_recovers_a_dead_dispatcher_s_work_past_an_item_it_cannot_read(
    client: Client, prefix: str
) -> None:
    """A key of the wrong type under the prefix: the reaper sets that one item aside (retried by a timer) and
    recovers the rest; before, its script failed on every pass and the dead dispatcher's work stayed held."""
    shard = Keys(prefix).shard(0)
    store, redis = client.store, client.store.redis
    steps = steps_of(shard, "drain_flow")
    for workflow_id in ("readable", "unreadable"):
        await client.start(engine_app.drain_flow, {"token": workflow_id}, workflow_id=workflow_id)
    claims = await store.claim(shard, WORKER_A, 2, [steps])
    assert {claim.workflow_id for claim in claims} == {"readable", "unreadable"}
    await redis.zadd(shard.workers, {WORKER_A: 0})  # its heartbeat ran out long ago
    unreadable, kept = shard.wf("unreadable"), shard.wf("unreadable") + ":kept"
    await redis.rename(unreadable, kept)
    await redis.set(unreadable, "not a hash")

    async def ready() -> set[str]:
        return {*await redis.zrange(steps.continuations, 0, -1), *await redis.zrange(steps.new_starts, 0, -1)}

    reply = await store.reap(shard, max_workers=10, max_step_crashes=5, retention_ms=60_000)
    assert (reply.workers, reply.steps) == (1, 1)
    assert await ready() == {"w|readable"}
    assert await redis.exists(shard.processing(WORKER_A)) == 0
    [(member, why)] = (await redis.hgetall(shard.faults)).items()
    assert member == "f|w|unreadable"
    assert "WRONGTYPE" in why
    assert await redis.zscore(shard.timers, member) is not None  # retried by its timer

    await redis.delete(unreadable)
    await redis.rename(kept, unreadable)
    await redis.zadd(shard.timers, {member: 0})  # its minute is up
    await store.fire_timers(shard, 10)
    assert await ready() == {"w|readable", "w|unreadable"}
    assert await redis.hlen(shard.faults) == 0


# -- direct hand-off ----------------------------------------------------------------------------------


async def listen(store: Store, shard: ShardKeys, worker: str, *queues: ReadyQueue) -> None:
    """Register ``worker`` as listening to ``queues`` (what a dispatcher's heartbeat does)."""
    await store.beat_shard(shard, worker, 10_000, [], queues)


async def test_a_commit_hands_off_the_oldest_ready_work_on_queues_its_dispatcher_listens_to(
    client: Client, prefix: str
) -> None:
    shard = Keys(prefix).shard(0)
    store, redis = client.store, client.store.redis
    tasks = task_queue(shard)
    await listen(store, shard, WORKER_A, tasks)
    for workflow_id in ("older", "newer"):
        await client.start(engine_app.drain_flow, {"token": workflow_id}, workflow_id=workflow_id)

    # worker B does not listen to the task queue: its commit leaves the task there, with a wake-up token
    lease = await first_step(store, shard, WORKER_B, "drain_flow", "older")
    assert await commit(store, WORKER_B, "older", lease, long_task_step("o"), handoff=1) == ("ok", [])
    assert await redis.zrange(tasks.continuations, 0, -1) == [WorkItem("t", "older", 1).encode()]
    assert await redis.llen(shard.wake(tasks.continuations)) == 1

    # worker A listens to it: its commit claims the oldest ready task (B's, first in line), not its own
    lease = await first_step(store, shard, WORKER_A, "drain_flow", "newer")
    status, [claim] = await commit(store, WORKER_A, "newer", lease, long_task_step("n"), handoff=1)
    assert status == "ok"
    assert isinstance(claim, TaskClaim)
    assert (claim.workflow_id, claim.seq, claim.call.attempt) == ("older", 1, 1)
    assert await redis.hget(shard.processing(WORKER_A), claim.item.encode()) == claim.lease
    assert await redis.zrange(tasks.continuations, 0, -1) == ["t|1|newer"]  # still ready for anyone, signalled
    assert await redis.llen(shard.wake(tasks.continuations)) == 1

    # a budget of 0 (the dispatcher is draining, or runs a suspect alone) hands nothing off
    await client.start(engine_app.drain_flow, {"token": "third"}, workflow_id="third")
    lease = await first_step(store, shard, WORKER_A, "drain_flow", "third")
    assert await commit(store, WORKER_A, "third", lease, long_task_step("t"), handoff=0) == ("ok", [])
    assert await redis.zrange(tasks.continuations, 0, -1) == ["t|1|newer", "t|1|third"]

    # a suspect (marked twice by the reaper) is never handed off: only a claim can give it out alone
    await redis.hset(shard.task("newer", 1), "suspect", 2)
    await client.start(engine_app.drain_flow, {"token": "fourth"}, workflow_id="fourth")
    lease = await first_step(store, shard, WORKER_A, "drain_flow", "fourth")
    assert await commit(store, WORKER_A, "fourth", lease, long_task_step("f"), handoff=5) == ("ok", [])
    assert await redis.zrange(tasks.continuations, 0, -1) == ["t|1|newer", "t|1|third", "t|1|fourth"]
    assert await redis.llen(shard.wake(tasks.continuations)) == 1
    [suspect] = await store.claim(shard, WORKER_A, 5, [tasks])
    assert (suspect.workflow_id, suspect.suspect) == ("newer", True)  # claimed alone, flagged


async def test_a_task_commit_hands_off_the_workflows_next_step_and_clears_the_wake_up_token(
    client: Client, prefix: str
) -> None:
    shard = Keys(prefix).shard(0)
    store, redis = client.store, client.store.redis
    steps, tasks = steps_of(shard, "drain_flow"), task_queue(shard)
    await listen(store, shard, WORKER_A, steps, tasks)
    await client.start(engine_app.drain_flow, {"token": "chain"}, workflow_id="chain")
    lease = await first_step(store, shard, WORKER_A, "drain_flow", "chain")
    status, [task] = await commit(store, WORKER_A, "chain", lease, long_task_step("c"), handoff=1)
    assert isinstance(task, TaskClaim)
    assert (status, task.workflow_id, task.seq) == ("ok", "chain", 1)
    assert await redis.llen(shard.wake(tasks.continuations)) == 0  # nothing left to wake another dispatcher for

    reply = await store.commit_task(WORKER_A, task, outcome="ok", payload='"done"', delay_ms=0, handoff=1)
    [step] = reply.claims
    assert reply.status == "ok"
    assert isinstance(step, StepClaim)
    assert step.workflow_id == "chain"
    assert step.inbox_start == 0  # A committed the step before: its cached run is current, only new entries follow
    assert step.entries == ['{"seq":1,"ok":true,"v":"done"}']  # the task's result travels with the claim
    assert await redis.hget(shard.processing(WORKER_A), "w|chain") == step.lease
    assert await redis.zcard(steps.continuations) == 0
    assert await redis.llen(shard.wake(steps.continuations)) == 0

    # the workflow's state says the next step runs, exactly as after an ordinary claim
    state = await client.get_state("chain")
    assert state is not None
    assert state.status == Status.RUNNING
    assert state.step == 1


# -- the order of work ------------------------------------------------------------------------------


async def test_claims_serve_continuations_before_new_starts_and_higher_priority_first(
    client: Client, prefix: str
) -> None:
    shard = Keys(prefix).shard(0)
    store = client.store
    queues = [steps_of(shard, "sleeper")]
    for index in range(3):
        await client.start(engine_app.sleeper, {"sleep": "60s"}, workflow_id=f"new-{index}")
    await client.start(engine_app.sleeper, {"sleep": "60s"}, workflow_id="urgent", priority=5)
    # a running workflow whose step is queued again (its sleep ended): a continuation, started last
    await client.start(engine_app.sleeper, {"sleep": "60s"}, workflow_id="running")
    [claim] = await store.claim(shard, WORKER_A, 1, queues)
    assert claim.workflow_id == "urgent"  # new starts: higher priority first
    [claim] = await store.claim(shard, WORKER_A, 1, queues)
    assert claim.workflow_id == "new-0"  # then first in, first out
    await redis_claim_and_requeue(client, shard, "running", queues)

    order = [c.workflow_id for c in await store.claim(shard, WORKER_A, 4, queues)]
    assert order == ["running", "new-1", "new-2"]  # the continuation first, however late it came


async def redis_claim_and_requeue(client: Client, shard: ShardKeys, workflow_id: str, queues: list[ReadyQueue]) -> None:
    """Run the workflow's first step (commit a sleep), then fire its timer: its next step is a continuation."""
    store = client.store
    claims = await store.claim(shard, WORKER_B, 10, queues)
    lease = next(c.lease for c in claims if c.workflow_id == workflow_id)
    assert await commit(store, WORKER_B, workflow_id, lease, sleep_step()) == ("ok", [])
    for other in claims:  # hand back what this helper took besides its workflow, keeping its place in line
        if other.workflow_id != workflow_id:
            await store.hand_back(shard, WORKER_B, {other.item.encode(): other.lease})
    await client.store.redis.zadd(shard.timers, {f"s|1|{workflow_id}": 0})  # due now
    fired = await store.fire_timers(shard, 10)
    assert len(fired.lags_ms) == 1
