"""Cancellation: raised where the workflow waits, cleanup runs durably, work behind released calls stops."""

from __future__ import annotations

import asyncio
from typing import Any

import bus_app
import pytest
from support import InProcessRoles, eventually, status_is, token

from bdurable import (
    Client,
    DurableError,
    InvalidInputError,
    Status,
    WorkflowCancelledError,
    WorkflowNotFoundError,
)
from bdurable.codec import loads
from bdurable.keys import ShardKeys

WAITS = ["task", "sleep", "event", "keyed event", "child", "gather"]


def keys_of(client: Client, workflow_id: str) -> ShardKeys:
    return client.keys.for_workflow(workflow_id)


async def state_of(client: Client, workflow_id: str) -> Any:
    state = await client.get_state(workflow_id)
    assert state is not None
    return state


async def waiting(client: Client, workflow_id: str, at: str, t: str) -> None:
    """Until the workflow waits where the test wants it to (a task waits until it actually runs)."""
    if at in ("task", "gather"):
        await eventually(lambda: bus_app.CALLS[t], timeout=5)
    if at in ("child", "gather"):
        await eventually(lambda: status_is(client, f"{workflow_id}-child", Status.AWAITING_EVENT), timeout=5)
    await eventually(
        lambda: status_is(client, workflow_id, Status.RUNNING, Status.SLEEPING, Status.AWAITING_EVENT), timeout=5
    )
    state = await state_of(client, workflow_id)
    assert state.step == 0
    await eventually(lambda: _idle(client, workflow_id), timeout=5)


async def _idle(client: Client, workflow_id: str) -> bool:
    """No step queued or running: the workflow is parked at its await."""
    pending = await client.store.redis.hget(client.keys.for_workflow(workflow_id).wf(workflow_id), "pending")
    return pending == "0"


async def timers(client: Client, workflow_id: str) -> list[str]:
    """The timers pending on the workflow's own shard."""
    shard = keys_of(client, workflow_id)
    return await client.store.redis.zrange(shard.timers, 0, -1)  # type: ignore[no-any-return]


@pytest.mark.parametrize("at", WAITS)
@pytest.mark.parametrize("style", ["except", "finally"])
async def test_cancellation_is_raised_at_the_await_and_the_cleanup_task_runs(
    client: Client, roles: InProcessRoles, at: str, style: str
) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    roles.scheduler()
    t = token()
    flow = bus_app.cancel_except if style == "except" else bus_app.cancel_finally
    handle = await client.start(flow, {"at": at, "token": t}, workflow_id=f"c-{t}")
    await waiting(client, handle.workflow_id, at, t)

    await client.cancel(handle.workflow_id, reason="user asked")
    with pytest.raises(WorkflowCancelledError) as caught:
        await client.result(handle.workflow_id, timeout=10)
    assert caught.value.reason == "user asked"
    assert caught.value.is_cancellation is True

    state = await state_of(client, handle.workflow_id)
    assert state.status == Status.CANCELLED
    assert state.error is not None
    assert state.error["reason"] == "user asked"
    assert state.error["type"] == "WorkflowCancelledError"
    expected_reason = "user asked" if style == "except" else "finally"
    assert ("cleanup", expected_reason) in bus_app.CALLS[t]
    history = await client.history(handle.workflow_id)
    cleanup = [h for h in history if h.kind == "task" and h.name == "bus_app.cleanup"]
    assert [(h.status, h.result) for h in cleanup] == [("done", f"cleaned up after {expected_reason}")]
    signals = [s async for s in client.signals(handle.workflow_id)]
    assert [(s.name, s.payload) for s in signals] == [("cleaned", f"cleaned up after {expected_reason}")]
    released = [h for h in history if h.seq < cleanup[0].seq]
    assert released
    assert all(h.status == "cancelled" for h in released), released

    # The work behind every released call stopped.
    assert await timers(client, handle.workflow_id) == []
    if at in ("task", "gather"):
        await eventually(lambda: any(c[0] == "slow cancelled" for c in bus_app.CALLS[t] if isinstance(c, tuple)))
        assert await client.store.redis.exists(keys_of(client, handle.workflow_id).task(handle.workflow_id, 1)) == 0
    if at in ("child", "gather"):
        child = await state_of(client, f"{handle.workflow_id}-child")
        await eventually(lambda: status_is(client, f"{handle.workflow_id}-child", Status.CANCELLED), timeout=5)
        child = await state_of(client, f"{handle.workflow_id}-child")
        assert child.error["reason"].startswith(f"parent workflow {handle.workflow_id}")
    if at in ("event", "keyed event", "gather"):
        wf = await client.store.redis.hgetall(keys_of(client, handle.workflow_id).wf(handle.workflow_id))
        assert not [f for f in wf if f.startswith("w:")]
        assert await client.publish_event("never", "late", key=t) == 0


async def test_a_workflow_that_catches_the_cancellation_and_returns_ends_cancelled_with_its_output(
    client: Client, roles: InProcessRoles
) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    t = token()
    handle = await client.start(bus_app.cancel_returns, {"at": "event", "token": t})
    await waiting(client, handle.workflow_id, "event", t)
    await handle.cancel(reason="changed my mind")
    with pytest.raises(WorkflowCancelledError) as caught:
        await handle.result(timeout=5)
    assert caught.value.reason == "changed my mind"
    state = await state_of(client, handle.workflow_id)
    assert state.status == Status.CANCELLED
    assert state.output == {"cleaned": "cleaned up after changed my mind", "reason": "changed my mind"}
    assert state.error["reason"] == "changed my mind"


async def test_a_cancel_without_reason(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    t = token()
    handle = await client.start(bus_app.cancel_returns, {"at": "event", "token": t})
    await waiting(client, handle.workflow_id, "event", t)
    with pytest.raises(InvalidInputError, match="at most 10,000 characters"):  # a reason is no payload
        await client.cancel(handle.workflow_id, reason="x" * 10_001)
    assert (await state_of(client, handle.workflow_id)).status == Status.AWAITING_EVENT  # nothing asked
    await client.cancel(handle.workflow_id)
    with pytest.raises(WorkflowCancelledError) as caught:
        await handle.result(timeout=5)
    assert not caught.value.reason
    state = await state_of(client, handle.workflow_id)
    assert state.status == Status.CANCELLED


async def test_cancelling_a_parent_cancels_its_running_children(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    t = token()
    handle = await client.start(bus_app.cancel_except, {"at": "child", "token": t}, workflow_id=f"p-{t}")
    child_id = f"p-{t}-child"
    await waiting(client, handle.workflow_id, "child", t)
    child = await state_of(client, child_id)
    assert child.parent_id == handle.workflow_id
    await client.cancel(handle.workflow_id, reason="stop all")
    with pytest.raises(WorkflowCancelledError):
        await client.result(handle.workflow_id, timeout=5)
    with pytest.raises(WorkflowCancelledError):
        await client.result(child_id, timeout=5)
    child = await state_of(client, child_id)
    assert child.status == Status.CANCELLED
    # The child's end is not delivered to the parent: its call was released by the cancel.
    history = await client.history(handle.workflow_id)
    assert [(h.kind, h.status) for h in history][:1] == [("child", "cancelled")]


async def test_cancelling_twice_is_harmless(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    t = token()
    handle = await client.start(bus_app.cancel_except, {"at": "event", "token": t})
    await waiting(client, handle.workflow_id, "event", t)
    await client.cancel(handle.workflow_id, reason="first")
    await client.cancel(handle.workflow_id, reason="second")  # before or after the bus applied the first
    with pytest.raises(WorkflowCancelledError) as caught:
        await client.result(handle.workflow_id, timeout=5)
    assert caught.value.reason == "first"
    assert bus_app.CALLS[t] == [("cleanup", "first")]
    inbox = await client.store.redis.lrange(keys_of(client, handle.workflow_id).inbox(handle.workflow_id), 0, -1)
    assert sum(1 for raw in inbox if "cancel" in loads(raw)) == 1
    with pytest.raises(DurableError):  # now it is finished
        await client.cancel(handle.workflow_id, reason="third")


async def test_cancelling_a_finished_workflow_raises_and_changes_nothing(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.quick, {"v": 1})
    assert await client.result(handle.workflow_id, timeout=5) == {"v": 1}
    key = keys_of(client, handle.workflow_id).wf(handle.workflow_id)
    before = await client.store.redis.hgetall(key)
    with pytest.raises(DurableError, match="already finished") as caught:
        await client.cancel(handle.workflow_id, reason="too late")
    assert not isinstance(caught.value, WorkflowNotFoundError)
    await asyncio.sleep(0.2)
    assert await client.store.redis.hgetall(key) == before
    assert await client.result(handle.workflow_id, timeout=5) == {"v": 1}


async def test_cancelling_an_unknown_workflow_raises_not_found(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    with pytest.raises(WorkflowNotFoundError):
        await client.cancel("no-such-workflow", reason="x")


async def test_a_running_task_is_cancelled_on_its_dispatcher(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    t = token()
    handle = await client.start(bus_app.cancel_except, {"at": "task", "token": t})
    await waiting(client, handle.workflow_id, "task", t)
    started = bus_app.CALLS[t][0][1]
    await client.cancel(handle.workflow_id, reason="enough")
    with pytest.raises(WorkflowCancelledError):
        await client.result(handle.workflow_id, timeout=5)
    cancelled = await eventually(
        lambda: [c for c in bus_app.CALLS[t] if isinstance(c, tuple) and c[0] == "slow cancelled"], timeout=5
    )
    assert cancelled[0][1] - started < 5  # a 30 s task, stopped within seconds
    assert not [c for c in bus_app.CALLS[t] if isinstance(c, tuple) and c[0] == "slow finished"]


async def test_the_late_result_of_a_task_that_ignores_its_cancellation_is_discarded(
    client: Client, roles: InProcessRoles
) -> None:
    roles.signal_bus()
    dispatcher = roles.dispatcher(bus_app)
    t = token()
    handle = await client.start(bus_app.stubborn_flow, {"token": t, "seconds": 1.0})
    await eventually(lambda: bus_app.CALLS[t], timeout=5)
    await client.cancel(handle.workflow_id, reason="stop")
    with pytest.raises(WorkflowCancelledError):
        await client.result(handle.workflow_id, timeout=5)
    await eventually(lambda: "stubborn returned" in bus_app.CALLS[t], timeout=5)
    assert "stubborn ignored a cancellation" in bus_app.CALLS[t]
    began = asyncio.get_running_loop().time()
    await roles.stop(dispatcher)  # it drains: the late result's commit is done (nothing is left in flight)
    assert asyncio.get_running_loop().time() - began < 5
    [entry] = await client.history(handle.workflow_id)
    assert (entry.kind, entry.status, entry.result) == ("task", "cancelled", None)
    raw_inbox = await client.store.redis.lrange(keys_of(client, handle.workflow_id).inbox(handle.workflow_id), 0, -1)
    inbox = [loads(raw) for raw in raw_inbox]
    assert inbox == [{"cancel": "stop"}]  # the late result never reached the workflow
    state = await state_of(client, handle.workflow_id)
    assert state.status == Status.CANCELLED
    assert dispatcher.sample("bdurable_stale_commits_total") == 0


async def test_a_cancel_of_a_version_mismatch_workflow_takes_effect_once_it_is_resumed(
    client: Client, roles: InProcessRoles
) -> None:
    import bus_app_v2

    roles.signal_bus()
    v1 = roles.dispatcher(bus_app)
    t = token()
    handle = await client.start(bus_app.versioned_wait, {"token": t})
    await eventually(lambda: status_is(client, handle.workflow_id, Status.AWAITING_EVENT), timeout=5)
    await roles.stop(v1)  # blue/green: version 1 is gone, only version 2 runs
    roles.dispatcher(bus_app_v2)
    await eventually(lambda: _live(client, handle.workflow_id, "versioned_wait", "2"), timeout=5)

    await client.cancel(handle.workflow_id, reason="halted anyway")
    await eventually(lambda: status_is(client, handle.workflow_id, Status.VERSION_MISMATCH), timeout=5)
    with pytest.raises(TimeoutError):
        await client.result(handle.workflow_id, timeout=0.3)  # the cancel waits for version 1
    assert bus_app.CALLS[t] == []
    await client.cancel(handle.workflow_id, reason="again")  # still not finished: harmless
    with pytest.raises(DurableError, match="no live dispatcher"):
        await client.resume(handle.workflow_id)

    roles.dispatcher(bus_app)  # version 1 is deployed again
    await eventually(lambda: _live(client, handle.workflow_id, "versioned_wait", "1"), timeout=5)
    await client.resume(handle.workflow_id)
    with pytest.raises(WorkflowCancelledError) as caught:
        await client.result(handle.workflow_id, timeout=5)
    assert caught.value.reason == "halted anyway"
    assert bus_app.CALLS[t] == [("cleanup", "halted anyway")]


async def _live(client: Client, workflow_id: str, name: str, version: str) -> bool:
    """Whether a dispatcher of ``name@version`` has announced itself on the workflow's own shard.

    A dispatcher beats every shard concurrently, so on a cluster one shard can see it before another.
    """
    members = await client.store.redis.zrange(keys_of(client, workflow_id).live(name), 0, -1)
    return any(m.startswith(f"{version}|") for m in members)


async def test_cancelling_a_parent_cancels_its_child_on_another_shard(settings: Any) -> None:
    import dataclasses

    from bdurable.keys import Keys

    sharded = dataclasses.replace(settings, shards=2)
    keys = Keys(sharded.prefix, 2)
    t = token()
    parent_id = next(f"p{n}-{t}" for n in range(100) if keys.shard_of(f"p{n}-{t}") != keys.shard_of(f"p{n}-{t}-child"))
    child_id = f"{parent_id}-child"
    roles = InProcessRoles(sharded)
    try:
        async with Client(settings=sharded) as client:
            roles.signal_bus()
            roles.dispatcher(bus_app)
            await client.start(bus_app.cancel_except, {"at": "child", "token": t}, workflow_id=parent_id)
            await eventually(lambda: status_is(client, child_id, Status.AWAITING_EVENT), timeout=5)
            await client.cancel(parent_id, reason="across shards")
            with pytest.raises(WorkflowCancelledError):
                await client.result(parent_id, timeout=5)
            with pytest.raises(WorkflowCancelledError) as caught:
                await client.result(child_id, timeout=5)
            assert caught.value.reason == f"parent workflow {parent_id} was cancelled or ended"
            assert bus_app.CALLS[t] == [("cleanup", "across shards")]
    finally:
        await roles.stop_all()


async def test_a_cancel_without_a_reason_has_none(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    t = token()
    handle = await client.start(bus_app.cancel_except, {"at": "sleep", "token": t})
    await handle.cancel()
    roles.dispatcher(bus_app)
    with pytest.raises(WorkflowCancelledError) as caught:
        await handle.result(timeout=10)
    assert caught.value.reason is None
    assert str(caught.value) == "workflow cancelled"
    state = await state_of(client, handle.workflow_id)  # re-raised by the workflow: the state says None too
    assert state.error is not None
    assert state.error["reason"] is None


async def test_a_cancel_before_the_first_step_is_raised_at_the_first_await(
    client: Client, roles: InProcessRoles
) -> None:
    roles.signal_bus()
    t = token()
    handle = await client.start(bus_app.cancel_except, {"at": "sleep", "token": t})
    await client.cancel(handle.workflow_id, reason="early")  # no dispatcher has run it yet
    await eventually(lambda: _cancel_requested(client, handle.workflow_id), timeout=5)
    roles.dispatcher(bus_app)
    with pytest.raises(WorkflowCancelledError) as caught:
        await client.result(handle.workflow_id, timeout=5)
    assert caught.value.reason == "early"
    history = await client.history(handle.workflow_id)
    assert [(h.kind, h.status) for h in history] == [("sleep", "cancelled"), ("task", "done"), ("signal", "done")]
    assert await timers(client, handle.workflow_id) == []


async def _cancel_requested(client: Client, workflow_id: str) -> bool:
    return await client.store.redis.hget(keys_of(client, workflow_id).wf(workflow_id), "cancel_requested") == "1"


async def test_cancelling_a_parked_workflow_releases_its_dead_letter_entry(
    client: Client, roles: InProcessRoles
) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    t = token()
    handle = await client.start(bus_app.cancel_except, {"at": "parked", "token": t})
    await eventually(lambda: status_is(client, handle.workflow_id, Status.PARKED), timeout=5)
    [entry] = [e for e in await client.dlq_list() if e.workflow_id == handle.workflow_id]
    assert entry.parked is True
    await client.cancel(handle.workflow_id, reason="give up")
    with pytest.raises(WorkflowCancelledError):
        await client.result(handle.workflow_id, timeout=5)
    assert bus_app.CALLS[t] == ["parks failed", ("cleanup", "give up")]
    released = await client.dlq_show(entry.entry_id)
    assert released.parked is False
    with pytest.raises(DurableError, match="not parked"):
        await client.dlq_retry(entry.entry_id)
    assert await client.dlq_purge() >= 1


async def test_a_child_cancelled_on_its_own_fails_its_parents_call(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.parent_catches, {})
    child_id = f"{handle.workflow_id}-child"
    await eventually(lambda: status_is(client, child_id, Status.AWAITING_EVENT), timeout=5)
    await client.cancel(child_id, reason="only the child")
    out = await client.result(handle.workflow_id, timeout=5)
    assert out["error_type"] == "WorkflowCancelledError"
    assert out["child"] == child_id
    state = await state_of(client, handle.workflow_id)
    assert state.status == Status.COMPLETED  # the parent itself was not cancelled
