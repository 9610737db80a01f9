"""A stopping dispatcher drains: work in flight finishes and is committed before it returns."""

from __future__ import annotations

import uuid

import engine_app
from support import InProcessRoles, eventually

from bdurable import Client, Settings, Status


async def test_stop_waits_for_the_running_task_and_commits_it(client: Client, roles: InProcessRoles) -> None:
    t = uuid.uuid4().hex
    first = roles.dispatcher(engine_app)
    handle = await client.start(engine_app.drain_flow, {"token": t})
    await eventually(lambda: engine_app.CALLS[t] == ["start"], timeout=5)

    await roles.stop(first)  # like SIGTERM: stop claiming, finish what is in flight, then leave
    assert engine_app.CALLS[t] == ["start", "done"]
    [entry] = await client.history(handle.workflow_id)
    assert (entry.kind, entry.status, entry.result) == ("task", "done", "finished")
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.status == Status.RUNNING  # its next step waits for a dispatcher
    assert state.step == 1

    roles.dispatcher(engine_app)
    assert await handle.result(timeout=5) == "finished"
    assert engine_app.CALLS[t] == ["start", "done"]  # the task ran exactly once


async def test_a_drain_longer_than_the_heartbeat_timeout_keeps_its_work(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    """A draining dispatcher goes on beating: the reaper does not take its running task away (which would run
    it twice, and refuse the drained commit as stale)."""
    assert settings.heartbeat_timeout < 3  # the task outlasts it
    t = uuid.uuid4().hex
    roles.reaper()
    first = roles.dispatcher(engine_app)
    handle = await client.start(engine_app.long_drain_flow, {"token": t})
    await eventually(lambda: engine_app.CALLS[t] == ["start"], timeout=5)

    await roles.stop(first)  # drains for 3 s, three heartbeat timeouts, with the reaper watching
    assert engine_app.CALLS[t] == ["start", "done"]
    assert first.sample("bdurable_stale_commits_total") in (None, 0.0)
    [entry] = await client.history(handle.workflow_id)
    assert (entry.kind, entry.status, entry.result, entry.attempts) == ("task", "done", "finished", 1)

    roles.dispatcher(engine_app)
    assert await handle.result(timeout=10) == "finished"
    assert engine_app.CALLS[t] == ["start", "done"]  # the task ran exactly once
