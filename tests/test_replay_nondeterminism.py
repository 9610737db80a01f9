"""Changed workflow code under an unchanged version fails the run with NonDeterminismError."""

from __future__ import annotations

import engine_app
import engine_app_altered
import pytest
from support import InProcessRoles, eventually, status_is

from bdurable import Client, Status, WorkflowFailedError


async def test_different_code_under_the_same_version_fails_with_nondeterminism(
    client: Client, roles: InProcessRoles
) -> None:
    original = roles.dispatcher(engine_app)
    handle = await client.start(engine_app.nd_flow, None)

    await eventually(lambda: status_is(client, handle.workflow_id, Status.SLEEPING), timeout=5)
    await roles.stop(original)

    # a redeploy that changed the code without bumping the version
    roles.dispatcher(engine_app_altered)
    roles.scheduler()
    with pytest.raises(WorkflowFailedError) as raised:
        await client.result(handle.workflow_id, timeout=5)
    assert raised.value.error_type == "NonDeterminismError"
    assert "first_step" in raised.value.message
    assert "other_step" in raised.value.message

    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.status == Status.FAILED
    assert state.error is not None
    assert state.error["type"] == "NonDeterminismError"
    history = await client.history(handle.workflow_id)
    # the altered code never ran anything: only the original's calls are recorded
    assert [(h.kind, h.name) for h in history] == [("task", "engine_app.first_step"), ("sleep", "300ms")]


async def test_code_that_returns_without_its_recorded_calls_fails_with_nondeterminism(
    client: Client, roles: InProcessRoles
) -> None:
    """Fewer durable calls than the history recorded is different code too: it must not complete."""
    original = roles.dispatcher(engine_app)
    handle = await client.start(engine_app.nd_short, None)

    await eventually(lambda: status_is(client, handle.workflow_id, Status.SLEEPING), timeout=5)
    await roles.stop(original)
    roles.dispatcher(engine_app_altered)
    roles.scheduler()
    with pytest.raises(WorkflowFailedError) as raised:
        await client.result(handle.workflow_id, timeout=5)
    assert raised.value.error_type == "NonDeterminismError"
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.status == Status.FAILED
    assert state.output is None


async def test_unchanged_code_replays_to_completion_on_a_new_dispatcher(client: Client, roles: InProcessRoles) -> None:
    """The control case: the same code replays fine on a dispatcher with no copy in memory."""
    first = roles.dispatcher(engine_app)
    handle = await client.start(engine_app.nd_flow, None)

    await eventually(lambda: status_is(client, handle.workflow_id, Status.SLEEPING), timeout=5)
    await roles.stop(first)
    roles.dispatcher(engine_app)
    roles.scheduler()
    assert await client.result(handle.workflow_id, timeout=5) == "original"
