"""Events through the signal bus: buffering, ordering, keyed publishes, timeouts and their races."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import bus_app
import pytest
from support import InProcessRoles, eventually, status_is, token

from bdurable import (
    Client,
    EventTimeoutError,
    Settings,
    Status,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from bdurable.keys import Keys


async def buffered(client: Client, workflow_id: str) -> list[str]:
    shard = client.keys.for_workflow(workflow_id)
    return await client.store.redis.lrange(shard.events(workflow_id), 0, -1)  # type: ignore[no-any-return]


async def bus_backlog(client: Client) -> int:
    return sum([int(await client.store.redis.llen(shard.bus)) for shard in client.keys.all_shards()])


# -- unkeyed events ---------------------------------------------------------------------------------------


async def test_an_event_sent_before_the_wait_is_buffered_and_returned_at_once(
    client: Client, roles: InProcessRoles
) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    t = token()
    handle = await client.start(bus_app.wait_after_task, {"token": t, "task_seconds": 0.8})
    await eventually(lambda: bus_app.CALLS[t], timeout=5)  # the task runs: no wait is registered yet
    await client.send_event(handle.workflow_id, "go", {"early": True})
    await eventually(lambda: buffered(client, handle.workflow_id), timeout=5)
    assert await buffered(client, handle.workflow_id) == ['go\n{"early":true}']
    assert await client.result(handle.workflow_id, timeout=5) == {"early": True}
    assert await buffered(client, handle.workflow_id) == []
    history = await client.history(handle.workflow_id)
    assert [(h.kind, h.name, h.status, h.result) for h in history] == [
        ("task", "bus_app.slow", "done", "slow done"),
        ("event", "go", "done", {"early": True}),
    ]


async def test_an_event_sent_after_the_wait_wakes_the_workflow(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.wait_events, {"name": "go"})
    await eventually(lambda: status_is(client, handle.workflow_id, Status.AWAITING_EVENT), timeout=5)
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.waiting_on is not None
    assert "go" in state.waiting_on
    await handle.send_event("go", {"n": 1})
    assert await client.result(handle.workflow_id, timeout=5) == [{"n": 1}]


async def test_events_are_delivered_in_the_order_they_were_sent(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    # Two events before the first wait (both buffered), and a burst while the workflow is waiting.
    early = await client.start(bus_app.wait_events, {"name": "go", "count": 2})
    await client.send_event(early.workflow_id, "go", "first")
    await client.send_event(early.workflow_id, "go", "second")
    waiting = await client.start(bus_app.wait_events, {"name": "go", "count": 10})
    await eventually(lambda: status_is(client, waiting.workflow_id, Status.AWAITING_EVENT), timeout=5)
    for n in range(10):
        await client.send_event(waiting.workflow_id, "go", n)
    assert await client.result(early.workflow_id, timeout=5) == ["first", "second"]
    assert await client.result(waiting.workflow_id, timeout=5) == list(range(10))


async def test_an_event_of_another_name_is_kept_for_a_later_wait(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.wait_events, {"name": "go"})
    await eventually(lambda: status_is(client, handle.workflow_id, Status.AWAITING_EVENT), timeout=5)
    await client.send_event(handle.workflow_id, "other", 1)
    await eventually(lambda: buffered(client, handle.workflow_id), timeout=5)
    assert await status_is(client, handle.workflow_id, Status.AWAITING_EVENT)
    await client.send_event(handle.workflow_id, "go", 2)
    assert await client.result(handle.workflow_id, timeout=5) == [2]


async def test_an_event_to_an_unknown_workflow_raises_not_found(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    with pytest.raises(WorkflowNotFoundError):
        await client.send_event("no-such-workflow", "go", 1)
    assert await bus_backlog(client) == 0  # nothing was stored


async def test_an_event_to_a_finished_workflow_raises_not_found(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.quick, "x")
    assert await client.result(handle.workflow_id, timeout=5) == "x"
    with pytest.raises(WorkflowNotFoundError):
        await client.send_event(handle.workflow_id, "go", 1)
    with pytest.raises(WorkflowNotFoundError):
        await handle.send_event("go", 1)
    assert await bus_backlog(client) == 0
    assert await buffered(client, handle.workflow_id) == []


async def test_an_event_is_durable_while_no_bus_runs(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(bus_app, with_bus=False)
    handle = await client.start(bus_app.wait_events, {"name": "go"})
    await eventually(lambda: status_is(client, handle.workflow_id, Status.AWAITING_EVENT), timeout=5)
    await client.send_event(handle.workflow_id, "go", "kept")  # accepted: it waits on the bus list
    assert await bus_backlog(client) == 1
    await asyncio.sleep(0.2)
    assert await status_is(client, handle.workflow_id, Status.AWAITING_EVENT)
    roles.signal_bus()
    assert await client.result(handle.workflow_id, timeout=5) == ["kept"]


# -- keyed publishes --------------------------------------------------------------------------------------


async def test_a_keyed_publish_wakes_every_waiter_on_that_key_and_no_one_else(
    client: Client, roles: InProcessRoles
) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    key, other_key = token(), token()
    same = [await client.start(bus_app.wait_keyed, {"name": "paid", "key": key}) for _ in range(3)]
    other = await client.start(bus_app.wait_keyed, {"name": "paid", "key": other_key})
    other_name = await client.start(bus_app.wait_keyed, {"name": "shipped", "key": key})
    unkeyed = await client.start(bus_app.wait_events, {"name": "paid"})
    everyone = [*same, other, other_name, unkeyed]
    for handle in everyone:
        await eventually(lambda h=handle: status_is(client, h.workflow_id, Status.AWAITING_EVENT), timeout=5)

    assert await client.publish_event("paid", {"ok": True}, key=key) == 3
    for handle in same:
        assert await client.result(handle.workflow_id, timeout=5) == {"ok": True}
    await asyncio.sleep(0.2)
    for handle in (other, other_name, unkeyed):
        state = await client.get_state(handle.workflow_id)
        assert state is not None
        assert (state.status, state.step) == (Status.AWAITING_EVENT, 0)
        assert await buffered(client, handle.workflow_id) == []  # a publish is never buffered

    # The index of waiters of that key is gone: a second publish finds no one and is dropped.
    assert await client.publish_event("paid", {"ok": "again"}, key=key) == 0
    assert await bus_backlog(client) == 0
    assert await client.publish_event("paid", {"ok": "other"}, key=other_key) == 1
    assert await client.result(other.workflow_id, timeout=5) == {"ok": "other"}


async def test_a_publish_to_hundreds_is_applied_in_chunks_and_in_order(client: Client, roles: InProcessRoles) -> None:
    """350 waiters: the bus wakes them 25 per script call; a second publish to the same key, sent right after,
    is applied only once the first has woken every one of its waiters, so it wakes none of them."""
    dispatcher = roles.dispatcher(bus_app, concurrency=200)
    key = token()
    handles = await client.start_many(bus_app.wait_keyed, [{"name": "paid", "key": key}] * 350)
    await eventually(lambda: _all_awaiting(client, handles), timeout=30, interval=0.1)
    await roles.stop(dispatcher)  # nothing runs meanwhile: the bus alone applies the two publishes
    assert await client.publish_event("paid", "first", key=key) == 350
    await client.publish_event("paid", "second", key=key)  # counted when sent; its waiters are the first's
    roles.signal_bus()
    roles.dispatcher(bus_app, concurrency=200)
    results = await asyncio.gather(*(h.result(timeout=60) for h in handles))
    assert results == ["first"] * 350
    assert await bus_backlog(client) == 0


async def _all_awaiting(client: Client, handles: list[Any]) -> bool:
    page = await client.list(status=Status.AWAITING_EVENT, name="wait_keyed", limit=1000)
    return len(page.items) == len(handles)


async def test_a_publish_with_no_one_waiting_returns_zero_and_is_dropped(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    key = token()
    assert await client.publish_event("paid", {"early": True}, key=key) == 0
    assert await bus_backlog(client) == 0
    handle = await client.start(bus_app.wait_keyed, {"name": "paid", "key": key, "timeout": "300ms"})
    roles.scheduler()
    # The earlier publish was not kept for the later waiter: it times out.
    with pytest.raises(WorkflowFailedError) as caught:
        await client.result(handle.workflow_id, timeout=5)
    assert caught.value.error_type == "EventTimeoutError"


async def test_keyed_waits_ignore_send_event_and_unkeyed_waits_ignore_publish(
    client: Client, roles: InProcessRoles
) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    key = token()
    keyed = await client.start(bus_app.wait_keyed, {"name": "paid", "key": key})
    unkeyed = await client.start(bus_app.wait_events, {"name": "paid"})
    for handle in (keyed, unkeyed):
        await eventually(lambda h=handle: status_is(client, h.workflow_id, Status.AWAITING_EVENT), timeout=5)
    await client.send_event(keyed.workflow_id, "paid", "direct")
    await eventually(lambda: buffered(client, keyed.workflow_id), timeout=5)  # kept for an unkeyed wait
    assert await client.publish_event("paid", "published", key=unkeyed.workflow_id) == 0
    await asyncio.sleep(0.2)
    assert await status_is(client, keyed.workflow_id, Status.AWAITING_EVENT)
    assert await status_is(client, unkeyed.workflow_id, Status.AWAITING_EVENT)
    assert await client.publish_event("paid", "published", key=key) == 1
    assert await client.result(keyed.workflow_id, timeout=5) == "published"


async def test_a_keyed_publish_wakes_waiters_on_every_shard(settings: Settings) -> None:
    sharded = dataclasses.replace(settings, shards=3)
    keys = Keys(sharded.prefix, 3)
    key = token()
    candidates = (f"w{n}-{key}" for n in range(1000))
    by_shard: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for candidate in candidates:  # four workflows on each shard, by construction
        if len(by_shard[keys.shard_of(candidate)]) < 4:
            by_shard[keys.shard_of(candidate)].append(candidate)
    ids = [workflow_id for group in by_shard.values() for workflow_id in group]
    assert len(ids) == 12
    roles = InProcessRoles(sharded)
    try:
        async with Client(settings=sharded) as client:
            roles.signal_bus()
            roles.dispatcher(bus_app)
            for workflow_id in ids:
                await client.start(bus_app.wait_keyed, {"name": "paid", "key": key}, workflow_id=workflow_id)
            for workflow_id in ids:
                await eventually(lambda w=workflow_id: status_is(client, w, Status.AWAITING_EVENT), timeout=5)
            assert await client.publish_event("paid", "all shards", key=key) == len(ids)
            for workflow_id in ids:
                assert await client.result(workflow_id, timeout=5) == "all shards"
            # An unkeyed event to a workflow on another shard than 0 goes through that shard's bus list.
            other = next(i for i in (f"e{n}-{key}" for n in range(50)) if keys.shard_of(i) != 0)
            await client.start(bus_app.wait_events, {"name": "go"}, workflow_id=other)
            await client.send_event(other, "go", "shard")
            assert await client.result(other, timeout=5) == ["shard"]
    finally:
        await roles.stop_all()


# -- timeouts ---------------------------------------------------------------------------------------------


async def test_an_event_timeout_raises_a_catchable_event_timeout_error(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    roles.scheduler()
    handle = await client.start(bus_app.wait_with_timeout, {"timeout": "200ms"})
    out = await client.result(handle.workflow_id, timeout=5)
    assert out["timed_out"] is True
    assert out["error"] == EventTimeoutError.__name__
    assert "go" in out["message"]
    [entry] = await client.history(handle.workflow_id)
    assert (entry.kind, entry.name, entry.status) == ("event", "go", "failed")
    # The wait is unregistered: a later event to a finished workflow is refused, not delivered.
    with pytest.raises(WorkflowNotFoundError):
        await client.send_event(handle.workflow_id, "go", 1)


async def test_an_event_before_its_timeout_cancels_the_timer(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    roles.scheduler()
    handle = await client.start(bus_app.wait_with_timeout, {"timeout": "2s"})
    await eventually(lambda: status_is(client, handle.workflow_id, Status.AWAITING_EVENT), timeout=5)
    await client.send_event(handle.workflow_id, "go", "in time")
    assert await client.result(handle.workflow_id, timeout=5) == {"timed_out": False, "value": "in time"}
    assert await client.store.redis.zcard(client.keys.for_workflow(handle.workflow_id).timers) == 0


async def test_an_event_racing_its_timeout_is_never_lost_and_never_delivered_twice(
    client: Client, roles: InProcessRoles
) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app, concurrency=100)
    roles.scheduler()
    redis = client.store.redis
    runs = 30
    timeouts = [50 + (i * 100) // runs for i in range(runs)]  # 50 .. 146 ms

    async def race(index: int) -> str:
        handle = await client.start(bus_app.race_timeout, {"timeout": f"{timeouts[index]}ms"})
        # The wait's deadline as Redis sees it: when the step committed the call, plus the timeout.
        calls = client.keys.for_workflow(handle.workflow_id).calls(handle.workflow_id)
        started = await eventually(lambda: redis.hget(calls, "1:t"), timeout=5, interval=0.002)
        due = int(started) + timeouts[index]
        # Send the event from 40 ms before to 40 ms after the deadline.
        offset_ms = -40 + (80 * index) / (runs - 1) + random.uniform(-3, 3)
        seconds, micros = await redis.time()
        await asyncio.sleep(max(0.0, (due + offset_ms - (seconds * 1000 + micros / 1000)) / 1000))
        await client.send_event(handle.workflow_id, "go", {"run": index})
        return handle.workflow_id

    ids = await asyncio.gather(*(race(i) for i in range(runs)))
    outcomes: dict[str, int] = {"event": 0, "timeout": 0}
    for index, workflow_id in enumerate(ids):
        out = await client.result(workflow_id, timeout=10)
        outcomes[out["outcome"]] += 1
        history = await client.history(workflow_id)
        if out["outcome"] == "event":
            assert out == {"outcome": "event", "value": {"run": index}}
            assert [(h.kind, h.status) for h in history] == [("event", "done")]
        else:
            assert out == {"outcome": "timeout", "late": {"run": index}}
            assert [(h.kind, h.status) for h in history] == [("event", "failed"), ("event", "done")]
        assert await buffered(client, workflow_id) == []  # never delivered and also kept
    print("race outcomes:", outcomes)
    assert outcomes["event"] > 0
    assert outcomes["timeout"] > 0


# -- sizes and names --------------------------------------------------------------------------------------


async def test_event_names_and_payloads_are_checked_before_anything_is_stored(
    client: Client, roles: InProcessRoles
) -> None:
    from bdurable import PayloadTooLargeError

    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.wait_events, {"name": "go"})
    for bad in ("", "a\nb", "a\tb"):
        with pytest.raises(ValueError, match="invalid event name"):
            await client.send_event(handle.workflow_id, bad, 1)
    big: dict[str, Any] = {"blob": "x" * (client.settings.max_payload + 1)}
    with pytest.raises(PayloadTooLargeError):
        await client.send_event(handle.workflow_id, "go", big)
    with pytest.raises(PayloadTooLargeError):
        await client.publish_event("go", big, key="k")
    with pytest.raises(ValueError, match="key"):
        await client.publish_event("go", 1, key="")
    assert await bus_backlog(client) == 0


async def test_publish_counts_waiting_workflows_not_waits(client: Client, roles: InProcessRoles) -> None:
    """``publish_event`` returns how many workflows it woke: one waiting twice on (name, key) counts once."""
    roles.dispatcher(bus_app)
    roles.scheduler()
    roles.signal_bus()
    name, key = "paid", token()
    handle = await client.start(bus_app.wait_keyed_twice, {"name": name, "key": key})
    await eventually(lambda: status_is(client, handle.workflow_id, "AWAITING_EVENT"))
    assert await client.publish_event(name, {"ok": 1}, key=key) == 1
    assert await handle.result(timeout=10) == [{"ok": 1}, {"ok": 1}]


async def test_keyed_waits_that_end_without_a_publish_leave_nothing_counted(
    client: Client, roles: InProcessRoles
) -> None:
    """A publish counts its waiting workflows from counts kept beside the waits (it never reads them all): a
    wait that times out, or whose workflow is cancelled, takes itself out of those counts, so a later publish
    counts no one and both keys are gone."""
    roles.dispatcher(bus_app)
    roles.scheduler()
    roles.signal_bus()
    name, key = "paid", token()
    timing_out = [await client.start(bus_app.wait_keyed, {"name": name, "key": key, "timeout": "300ms"}) for _ in "ab"]
    cancelled = await client.start(bus_app.wait_keyed_twice, {"name": name, "key": key})
    for handle in [*timing_out, cancelled]:
        await eventually(lambda handle=handle: status_is(client, handle.workflow_id, "AWAITING_EVENT"))
    await client.cancel(cancelled.workflow_id)
    for handle in timing_out:
        with pytest.raises(WorkflowFailedError, match="EventTimeoutError"):
            await handle.result(timeout=10)
    await eventually(lambda: status_is(client, cancelled.workflow_id, "CANCELLED"))
    assert await client.publish_event(name, {"late": True}, key=key) == 0
    keys = [k for shard in client.keys.all_shards() for k in (shard.keyed(name, key), shard.keyed_count(name, key))]
    assert [await client.store.redis.exists(k) for k in keys] == [0] * len(keys)
