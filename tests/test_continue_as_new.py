"""Continue-as-new end to end: the same id, a new run, a fresh history; events between runs, signals across
runs, children of later runs, a cancellation that a run carries over, and memory that stays flat."""

from __future__ import annotations

import asyncio

import entity_app
import pytest
from support import InProcessRoles, eventually, within

from bdurable import Client, Status, WorkflowCancelledError


def start_roles(roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.scheduler()
    roles.dispatcher(entity_app)


async def memory_of(client: Client, workflow_id: str) -> int:
    """Bytes Redis uses for the workflow's keys (its hash, calls, inbox, signal log, event buffer)."""
    shard = client.keys.for_workflow(workflow_id)
    total = 0
    for key in (shard.wf(workflow_id), shard.calls(workflow_id), shard.inbox(workflow_id),
                shard.signals(workflow_id), shard.events(workflow_id)):  # fmt: skip
        total += int(await client.store.redis.memory_usage(key) or 0)
    return total


async def test_an_entity_continues_as_new_with_a_fresh_history_and_loses_no_event(
    client: Client, roles: InProcessRoles
) -> None:
    start_roles(roles)
    handle = await client.start(entity_app.tally, {"total": 0, "batch": 5}, workflow_id="tally-1")
    for n in range(1, 24):  # sent at once: most arrive while a run waits, some between two runs
        await client.send_event("tally-1", "add", {"n": n})
    await eventually(lambda: _run_at_least(client, "tally-1", 5), timeout=20)
    await client.send_event("tally-1", "add", {"stop": True})
    assert await handle.result(timeout=20) == sum(range(1, 24))
    state = await client.get_state("tally-1")
    assert state is not None
    assert state.run == 5  # runs of 5 events: 1-5, 6-10, 11-15, 16-20, then 21-23 and the stop
    history = await client.history("tally-1")
    assert [h.kind for h in history] == ["event", "signal"] * 3 + ["event"]  # only the last run's calls
    assert history[0].seq == 4 * 10 + 1  # numbered after the earlier runs' calls


async def _run_at_least(client: Client, workflow_id: str, run: int) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and state.run >= run


async def test_signals_follow_the_workflow_across_runs(client: Client, roles: InProcessRoles) -> None:
    start_roles(roles)
    await client.start(entity_app.tally, {"total": 0, "batch": 3}, workflow_id="tally-2")
    seen: list[int] = []

    async def follow() -> None:
        async for signal in client.signals("tally-2"):
            seen.append(signal.payload)

    follower = asyncio.create_task(follow())
    for n in range(1, 11):
        await client.send_event("tally-2", "add", {"n": n})
        await eventually(lambda n=n: sum(range(1, n + 1)) in seen, timeout=10)  # type: ignore[misc]
    await client.send_event("tally-2", "add", {"stop": True})
    await within(10, follower)  # ends when the workflow finishes, not when a run continues
    assert seen == [sum(range(1, n + 1)) for n in range(1, 11)]  # every signal once, in order, over 4 runs


async def test_children_of_later_runs_are_new_children(client: Client, roles: InProcessRoles) -> None:
    start_roles(roles)
    handle = await client.start(entity_app.counting_loop, {"count": 0, "runs": 4, "children": 1})
    assert await handle.result(timeout=20) == {"count": 4}
    children = list((await client.list(name="child_echo")).items)
    assert sorted(c.output for c in children) == [1, 2, 3, 4]  # one child per run, none reused
    assert len({c.workflow_id for c in children}) == 4


async def test_a_cancellation_caught_before_continuing_reaches_the_next_run(
    client: Client, roles: InProcessRoles
) -> None:
    start_roles(roles)
    handle = await client.start(entity_app.stubborn, {"run": 1})
    await eventually(lambda: _status(client, handle.workflow_id, Status.AWAITING_EVENT), timeout=10)
    await client.cancel(handle.workflow_id, reason="enough")
    with pytest.raises(WorkflowCancelledError, match="enough"):
        await handle.result(timeout=10)
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert (state.status, state.run, state.input) == (Status.CANCELLED, 2, {"run": 2})


async def _status(client: Client, workflow_id: str, status: str) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and state.status == status


async def test_a_thousand_runs_keep_memory_flat(client: Client, roles: InProcessRoles) -> None:
    start_roles(roles)
    handle = await client.start(entity_app.counting_loop, {"count": 0, "runs": 1000}, workflow_id="loop")
    await eventually(lambda: _run_at_least(client, "loop", 100), timeout=60, interval=0.05)
    early = await memory_of(client, "loop")
    assert await handle.result(timeout=120) == {"count": 1000}
    late = await memory_of(client, "loop")  # finished, its last run's history kept (until retention)
    state = await client.get_state("loop")
    assert state is not None
    assert state.run == 1000
    assert len(await client.history("loop")) == 1  # the last run's one task
    # Bounded: a few hundred bytes whatever the run (a thousand runs of history would take about 200 KB).
    assert late < 4096, (early, late)
    assert late < early * 3, (early, late)
