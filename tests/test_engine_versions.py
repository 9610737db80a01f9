"""Workflow versions: routing by version, VERSION_MISMATCH and resume, blue/green, waiting for dispatchers."""

from __future__ import annotations

import asyncio

import engine_app
import engine_app_v2
import pytest
from support import InProcessRoles, eventually, status_is

from bdurable import Client, DurableError, Status, WorkflowCancelledError, WorkflowHandle, WorkflowNotFoundError


async def live_versions(client: Client, name: str) -> list[set[str]]:
    """Versions of ``name`` a dispatcher currently holds, per shard (liveness entries not yet expired).

    A dispatcher beats every shard concurrently, so on a cluster the shards may briefly disagree.
    """
    redis = client.store.redis
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    per_shard = []
    for shard in client.keys.all_shards():
        members = await redis.zrangebyscore(shard.live(name), f"({now_ms}", "+inf")
        per_shard.append({member.partition("|")[0] for member in members})
    return per_shard


async def status_of(client: Client, workflow_id: str) -> str | None:
    state = await client.get_state(workflow_id)
    return None if state is None else state.status


async def halted_after_its_sleep(client: Client, roles: InProcessRoles, workflow_id: str) -> WorkflowHandle:
    """A version 1 workflow whose sleep ends while only version 2 runs: VERSION_MISMATCH, the sleep done."""
    v1 = roles.dispatcher(engine_app)
    handle = await client.start(engine_app.versioned_v1, {"sleep": "300ms", "task": False}, workflow_id=workflow_id)
    await eventually(lambda: status_is(client, workflow_id, Status.SLEEPING), timeout=5)
    await roles.stop(v1)

    roles.dispatcher(engine_app_v2)
    await eventually(lambda: _live(client, {"2"}), timeout=5)
    roles.scheduler()  # the timer fires now, while only version 2 is live
    await eventually(lambda: status_is(client, workflow_id, Status.VERSION_MISMATCH), timeout=5)
    return handle


async def test_version_mismatch_halts_unchanged_until_resumed(client: Client, roles: InProcessRoles) -> None:
    handle = await halted_after_its_sleep(client, roles, "vm-1")

    halted = await client.get_state("vm-1")
    assert halted is not None
    assert halted.step == 1  # the sleep completed; nothing else happened
    assert halted.output is None
    assert halted.error is None
    assert halted.waiting_on is not None
    assert "versioned@1" in halted.waiting_on
    history = await client.history("vm-1")
    assert [(h.kind, h.status) for h in history] == [("sleep", "done")]  # version 2 ran none of it
    assert [s.workflow_id for s in (await client.list(status="VERSION_MISMATCH")).items] == ["vm-1"]

    with pytest.raises(DurableError) as raised:
        await client.resume("vm-1")  # version 1 is still not deployed
    assert not isinstance(raised.value, WorkflowNotFoundError)
    assert await status_of(client, "vm-1") == Status.VERSION_MISMATCH
    unchanged = await client.get_state("vm-1")
    assert unchanged is not None
    assert (unchanged.step, unchanged.updated_at) == (halted.step, halted.updated_at)

    roles.dispatcher(engine_app)  # version 1 is back
    await eventually(lambda: _live(client, {"1", "2"}), timeout=5)
    await client.resume("vm-1")
    assert await handle.result(timeout=5) == {"workflow": "1"}


async def test_a_cancel_of_a_halted_workflow_wins_over_the_result_that_arrived_while_halted(
    client: Client, roles: InProcessRoles
) -> None:
    """The timer fired while the workflow was halted; the cancel came after. Once resumed, the run sees the
    cancel first (docs/programming-model.md: the cancellation takes effect once it is resumed), not the timer's
    result, on which it would have finished COMPLETED."""
    roles.signal_bus()  # applies the cancel
    handle = await halted_after_its_sleep(client, roles, "vm-c")
    assert [(h.kind, h.status) for h in await client.history("vm-c")] == [("sleep", "done")]

    await client.cancel("vm-c", reason="stop it")
    await eventually(lambda: _cancel_applied(client, "vm-c"), timeout=5)
    assert await status_of(client, "vm-c") == Status.VERSION_MISMATCH  # halted still: nothing runs it

    roles.dispatcher(engine_app)
    await eventually(lambda: _live(client, {"1", "2"}), timeout=5)
    await client.resume("vm-c")
    with pytest.raises(WorkflowCancelledError) as caught:
        await handle.result(timeout=5)
    assert caught.value.reason == "stop it"
    assert await status_of(client, "vm-c") == Status.CANCELLED


async def test_starting_a_version_nobody_runs_while_another_is_live_halts_at_once(
    client: Client, roles: InProcessRoles
) -> None:
    roles.dispatcher(engine_app_v2)
    await eventually(lambda: _live(client, {"2"}), timeout=5)
    handle = await client.start(engine_app.versioned_v1, {"task": False})
    state = await handle.state()
    assert state is not None
    assert state.status == Status.VERSION_MISMATCH
    assert state.step == 0
    roles.dispatcher(engine_app)
    await eventually(lambda: _live(client, {"1", "2"}), timeout=5)
    await client.resume(handle.workflow_id)
    assert await handle.result(timeout=5) == {"workflow": "1"}


async def test_blue_green_each_version_runs_its_own_workflows(client: Client, roles: InProcessRoles) -> None:
    """Old and new code side by side: each version's runs finish, their workflow code and tasks included.

    Version 2 calls a task (``engine_app_v2.v2_tag``) that the version 1 dispatchers do not have, and the
    reverse: a dispatcher must never burn a task's attempts on a task it cannot run (both tags allow a
    single attempt, so one misrouted claim fails its workflow).
    """
    roles.dispatcher(engine_app)
    roles.dispatcher(engine_app_v2)
    roles.scheduler()
    await eventually(lambda: _live(client, {"1", "2"}), timeout=5)
    old = list(await asyncio.gather(*(client.start(engine_app.versioned_v1, {}) for _ in range(10))))
    new = list(await asyncio.gather(*(client.start(engine_app_v2.versioned_v2, {}) for _ in range(10))))
    old += [await client.start("versioned", {}, version="1") for _ in range(3)]
    old_results = await asyncio.gather(*(h.result(timeout=8) for h in old), return_exceptions=True)
    new_results = await asyncio.gather(*(h.result(timeout=8) for h in new), return_exceptions=True)
    assert old_results == [{"workflow": "1", "task": "1"}] * len(old)
    assert new_results == [{"workflow": "2", "task": "2"}] * len(new)
    assert [await client.store.redis.zcard(shard.dlq) for shard in client.keys.all_shards()] == [0] * client.keys.shards


async def test_a_task_is_only_claimed_by_a_dispatcher_that_has_it(client: Client, roles: InProcessRoles) -> None:
    """The new deploy is busy (one item at a time) while the old one idles: the old one must leave the new
    code's tasks alone (each allows a single attempt), not fail them for lack of the code."""
    roles.dispatcher(engine_app)
    roles.dispatcher(engine_app_v2, concurrency=1)
    await eventually(lambda: _live(client, {"1", "2"}), timeout=5)
    handle = await client.start(engine_app_v2.new_feature, None)
    assert await handle.result(timeout=5) == ["held", "2"]


async def test_start_by_name_uses_the_newest_live_version(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    await eventually(lambda: _live(client, {"1"}), timeout=5)
    v2 = roles.dispatcher(engine_app_v2)
    await eventually(lambda: _live(client, {"1", "2"}), timeout=5)
    newest = await client.start("versioned", {"task": False})
    state = await newest.state()
    assert state is not None
    assert state.version == "2"
    assert await newest.result(timeout=5) == {"workflow": "2"}

    await roles.stop(v2)  # version 2 is still registered, but nobody runs it any more
    await eventually(lambda: _live(client, {"1"}), timeout=5)
    fallback = await client.start("versioned", {"task": False})
    assert await fallback.result(timeout=5) == {"workflow": "1"}


async def test_resume_refuses_workflows_that_are_not_halted(client: Client, roles: InProcessRoles) -> None:
    running = await client.start(engine_app.sleeper, {"sleep": "1h"})  # no dispatcher: stays RUNNING
    with pytest.raises(DurableError) as raised:
        await client.resume(running.workflow_id)
    assert not isinstance(raised.value, WorkflowNotFoundError)
    assert "RUNNING" in str(raised.value)

    roles.dispatcher(engine_app)
    done = await client.start(engine_app.quick, 1)
    assert await done.result(timeout=5) == 1
    with pytest.raises(DurableError) as raised:
        await client.resume(done.workflow_id)
    assert not isinstance(raised.value, WorkflowNotFoundError)
    assert await status_of(client, done.workflow_id) == Status.COMPLETED

    with pytest.raises(WorkflowNotFoundError):
        await client.resume("no-such-workflow")


async def test_a_queued_step_says_which_version_s_dispatcher_it_waits_for(
    client: Client, roles: InProcessRoles
) -> None:
    # During a deploy an old run may wait for a dispatcher of its old version: waiting_on names it.
    roles.dispatcher(engine_app, concurrency=1)
    await eventually(lambda: _live(client, {"1"}), timeout=5)
    busy = await client.start(engine_app.blocking_flow, {"seconds": 1.5, "n": 1})  # its one slot, 1.5 s
    await eventually(lambda: _waits_on(client, busy.workflow_id, "task"), timeout=5)
    queued = await client.start(engine_app.versioned_v1, {"task": False})
    state = await queued.state()
    assert state is not None
    assert (state.status, state.waiting_on) == (Status.RUNNING, "a dispatcher of versioned@1 to run its next step")
    assert await queued.result(timeout=10) == {"workflow": "1"}
    await busy.result(timeout=10)


async def _waits_on(client: Client, workflow_id: str, prefix: str) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and (state.waiting_on or "").startswith(prefix)


async def test_without_any_live_dispatcher_a_workflow_waits_then_runs(client: Client, roles: InProcessRoles) -> None:
    handle = await client.start(engine_app.versioned_v1, {})
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.status == Status.RUNNING
    assert state.waiting_on is not None
    assert "live dispatcher" in state.waiting_on
    roles.scheduler()  # housekeeping (the version sweep) must not halt it: no version of it is live at all
    await asyncio.sleep(0.5)  # more than two housekeeping rounds (every 0.2 s here)
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.status == Status.RUNNING
    roles.dispatcher(engine_app)
    assert await handle.result(timeout=5) == {"workflow": "1", "task": "1"}


# -- helpers --------------------------------------------------------------------------------------------


async def _cancel_applied(client: Client, workflow_id: str) -> bool:
    """Whether the signal bus has applied a cancel to the workflow (it answers ``already`` to another)."""
    raw = await client.store.redis.hget(client.keys.for_workflow(workflow_id).wf(workflow_id), "cancel_requested")
    return raw == "1"


async def _live(client: Client, versions: set[str]) -> bool:
    """Whether exactly ``versions`` of ``versioned`` are live on every shard."""
    return all(live == versions for live in await live_versions(client, "versioned"))
