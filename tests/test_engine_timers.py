"""Durable timers fire on time, exactly once, with several schedulers; finished workflows expire."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import engine_app
import pytest
from support import InProcessRoles, eventually, token

from bdurable import Client, Settings, Status, WorkflowNotFoundError
from bdurable.keys import Keys


async def test_a_sleep_fires_after_its_due_time_and_not_before(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    roles.scheduler()
    handle = await client.start(engine_app.sleeper, {"sleep": "300ms"})
    assert await client.result(handle.workflow_id, timeout=5) == "woke"
    [entry] = await client.history(handle.workflow_id)
    assert (entry.kind, entry.name, entry.status) == ("sleep", "300ms", "done")
    assert entry.started_at is not None
    assert entry.finished_at is not None
    waited = entry.finished_at - entry.started_at
    assert timedelta(milliseconds=300) <= waited < timedelta(milliseconds=800)


async def test_a_sleeping_workflow_reports_sleeping_until_the_timer_fires(
    client: Client, roles: InProcessRoles
) -> None:
    roles.dispatcher(engine_app)
    handle = await client.start(engine_app.sleeper, {"sleep": "200ms"})

    async def sleeping() -> bool:
        state = await client.get_state(handle.workflow_id)
        return state is not None and state.status == Status.SLEEPING

    await eventually(sleeping, timeout=5)
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.waiting_on is not None
    assert "200ms" in state.waiting_on
    await asyncio.sleep(0.4)  # past due, but no scheduler runs: nothing may fire
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert (state.status, state.step) == (Status.SLEEPING, 0)
    roles.scheduler()
    assert await client.result(handle.workflow_id, timeout=5) == "woke"


async def test_two_schedulers_never_fire_a_timer_twice(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app, concurrency=100)
    schedulers = [roles.scheduler(), roles.scheduler()]
    t = token()
    count = 50
    handles = await asyncio.gather(
        *(client.start(engine_app.sleep_then_tally, {"sleep": "100ms", "token": t}) for _ in range(count))
    )
    ids = [h.workflow_id for h in handles]
    results = await asyncio.gather(*(client.result(i, timeout=8) for i in ids))
    assert sorted(results) == sorted(ids)
    assert Counter(engine_app.CALLS[t]) == Counter(ids)  # each workflow's task ran exactly once
    for workflow_id in ids:
        state = await client.get_state(workflow_id)
        assert state is not None
        assert (state.status, state.step) == (Status.COMPLETED, 2)
        history = await client.history(workflow_id)
        assert [(h.kind, h.status) for h in history] == [("sleep", "done"), ("task", "done")]
    assert sum(s.sample("bdurable_timers_fired_total") or 0 for s in schedulers) == count


# -- retention --------------------------------------------------------------------------------------------


@pytest.fixture
def short_retention(settings: Settings) -> Settings:
    return dataclasses.replace(settings, retention=1.0)


@pytest.fixture
async def retention_roles(short_retention: Settings) -> AsyncIterator[InProcessRoles]:
    started = InProcessRoles(short_retention)
    try:
        yield started
    finally:
        await started.stop_all()


async def test_finished_workflows_expire_after_the_retention_period(
    client: Client, retention_roles: InProcessRoles, prefix: str
) -> None:
    retention_roles.dispatcher(engine_app)
    retention_roles.scheduler()
    handle = await client.start(engine_app.history_flow, {})
    assert await client.result(handle.workflow_id, timeout=5) == 6
    finished = await client.get_state(handle.workflow_id)
    assert finished is not None
    assert finished.status == Status.COMPLETED
    child_id = f"{handle.workflow_id}:4"
    assert await client.get_state(child_id) is not None
    page = await client.list()
    assert handle.workflow_id in {s.workflow_id for s in page.items}
    assert await keys_with(client, prefix, handle.workflow_id) != []

    async def gone() -> bool:
        if await client.get_state(handle.workflow_id) is not None:
            return False
        listed = {s.workflow_id for s in (await client.list()).items}
        listed |= {s.workflow_id for s in (await client.list(status="COMPLETED")).items}
        return not listed and await keys_with(client, prefix, handle.workflow_id) == []

    began = asyncio.get_running_loop().time()
    await eventually(gone, timeout=4)
    assert asyncio.get_running_loop().time() - began > 0.5  # kept for about the retention period first
    assert await client.get_state(child_id) is None
    with pytest.raises(WorkflowNotFoundError):
        await client.result(handle.workflow_id, timeout=1)
    with pytest.raises(WorkflowNotFoundError):
        await client.history(handle.workflow_id)


async def keys_with(client: Client, prefix: str, workflow_id: str) -> list[str]:
    """Every key of this prefix that names the workflow (its hashes, lists and task records)."""
    pattern = f"{Keys(prefix, client.settings.shards).for_workflow(workflow_id).tag}:*{workflow_id}*"
    return [key async for key in client.store.redis.scan_iter(match=pattern.replace("{", "\\{").replace("}", "\\}"))]
