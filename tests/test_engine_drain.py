"""A stopping dispatcher drains: work in flight finishes and is committed before it returns."""

from __future__ import annotations

import uuid

import engine_app
from support import InProcessRoles, eventually

from bdurable import Client, Status


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
