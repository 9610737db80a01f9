"""Direct hand-off and lost claim replies, end to end with a real dispatcher.

A commit claims the work it made ready for its own dispatcher (a workflow's next task, or its next step when
that step could not run with the task's commit), within the dispatcher's concurrency; a claim whose reply never
reached a live dispatcher is handed back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import types

from support import InProcessRoles, eventually

from bdurable import Client, Context, Settings, task, workflow
from bdurable.store import ReadyQueue


@task(name="handoff.add_one")
async def add_one(n: int) -> int:
    return n + 1


RUNNING = {"now": 0, "most": 0}


@task(name="handoff.slow_square")
async def slow_square(n: int) -> int:
    RUNNING["now"] += 1
    RUNNING["most"] = max(RUNNING["most"], RUNNING["now"])
    try:
        await asyncio.sleep(0.05)
        return n * n
    finally:
        RUNNING["now"] -= 1


GATE: dict[str, asyncio.Event] = {}
STARTED: set[str] = set()


@task(name="handoff.gated")
async def gated(key: str) -> str:
    STARTED.add(key)
    await GATE[key].wait()
    return f"done:{key}"


@workflow(name="handoff_gated_flow", version="1")
async def gated_flow(ctx: Context, key: str) -> str:
    first = await gated(key)
    return f"{first}+{await add_one(1)}"


@workflow(name="handoff_one_task", version="1")
async def one_task(ctx: Context, n: int) -> int:
    return await add_one(n)


@workflow(name="handoff_fan_out", version="1")
async def fan_out(ctx: Context, n: int) -> list[int]:
    return list(await asyncio.gather(*(slow_square(i) for i in range(n))))


APP = types.ModuleType("handoff_app")
APP.add_one, APP.slow_square, APP.one_task, APP.fan_out = add_one, slow_square, one_task, fan_out  # type: ignore[attr-defined]
APP.gated, APP.gated_flow = gated, gated_flow  # type: ignore[attr-defined]


async def test_a_workflows_next_task_and_step_start_on_the_dispatcher_that_committed(
    client: Client, roles: InProcessRoles
) -> None:
    dispatcher = roles.dispatcher(APP)
    for n in range(5):
        assert await (await client.start(one_task, n)).result(timeout=5) == n + 1
    # each workflow: step 1 (claimed) hands off its task, whose commit also commits the final step, run
    # right after the task on the dispatcher's copy of the run
    # (a result is published by the commit itself: the dispatcher counts it once the commit's reply is back)
    await eventually(lambda: dispatcher.sample("bdurable_steps_with_task_total") == 5, timeout=5)
    assert dispatcher.sample("bdurable_handoffs_total") == 5


async def test_a_step_is_committed_with_its_task_only_when_redis_vouches_for_the_copy_it_ran_on(
    client: Client, roles: InProcessRoles
) -> None:
    """The step run right after a task commits with it only if the dispatcher's copy of the run is the committed
    state; here another dispatcher seems to have run a step meanwhile (``cache_owner``), so the task's result is
    delivered as usual and the step runs again from the history, with the same outcome."""
    dispatcher = roles.dispatcher(APP)
    GATE["stale"] = asyncio.Event()
    handle = await client.start(gated_flow, "stale")
    wf = client.keys.for_workflow(handle.workflow_id).wf(handle.workflow_id)

    try:
        await eventually(lambda: "stale" in STARTED, timeout=5)
        await client.store.redis.hset(wf, "cache_owner", "another-dispatcher")  # type: ignore[misc]
    finally:
        GATE["stale"].set()
    assert await handle.result(timeout=5) == "done:stale+2"
    # the gated task's step ran again from Redis (no step with it); add_one's step followed it as usual (counted
    # once the commit's reply is back: the result was published by the commit itself)
    await eventually(lambda: dispatcher.sample("bdurable_steps_with_task_total") == 1, timeout=5)
    assert dispatcher.sample("bdurable_steps_total", name="handoff_gated_flow") == 3
    [first, second] = await client.history(handle.workflow_id)
    assert (first.status, first.result, second.status, second.result) == ("done", "done:stale", "done", 2)


async def test_hand_offs_stay_within_the_dispatchers_concurrency(client: Client, roles: InProcessRoles) -> None:
    RUNNING.update(now=0, most=0)
    roles.dispatcher(APP, concurrency=2)
    handles = [await client.start(fan_out, 6) for _ in range(6)]
    for handle in handles:
        assert await handle.result(timeout=10) == [i * i for i in range(6)]
    assert RUNNING["most"] == 2


async def test_a_claim_whose_reply_never_arrived_is_handed_back_by_its_live_dispatcher(settings: Settings) -> None:
    quick = dataclasses.replace(settings, heartbeat_interval=0.05, heartbeat_timeout=1.0)  # checks every 1.25 s
    roles = InProcessRoles(quick)
    try:
        async with Client(settings=quick) as client:
            handle = await client.start(one_task, 41)
            shard = client.keys.for_workflow(handle.workflow_id)
            worker = "dispatcher-with-a-lost-reply"
            ready = ReadyQueue(
                shard.step_queue("default", "handoff_one_task", "1"), shard.step_new("default", "handoff_one_task", "1")
            )
            # The claim lands in Redis, as the dispatcher's, but its reply is lost: the dispatcher never sees it.
            [claim] = await client.store.claim(shard, worker, 1, [ready])
            assert claim.workflow_id == handle.workflow_id
            roles.dispatcher(APP, worker_id=worker)  # alive and heartbeating: the reaper will not step in
            assert await handle.result(timeout=8) == 42
            assert await client.store.redis.hlen(shard.processing(worker)) == 0
    finally:
        await roles.stop_all()
