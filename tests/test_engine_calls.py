"""Each kind of durable call, and ordinary Python control flow around them, against a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import engine_app
import pytest
from support import InProcessRoles, token

from bdurable import Client, Status, WorkflowFailedError
from bdurable.durations import parse_duration

# -- durations --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("30m", 1800),
        ("1h30m", 5400),
        ("7 days", 7 * 86400),
        ("2 weeks", 14 * 86400),
        (2.5, 2.5),
        (timedelta(minutes=2), 120),
    ],
)
def test_parse_duration_accepts_every_documented_form(text: str | float | timedelta, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "soon", "5 parsecs", "-3s", -1, float("nan")])
def test_parse_duration_rejects_garbage(bad: str | float) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


# -- tasks ------------------------------------------------------------------------------------------------


async def test_async_task_and_plain_def_task_in_a_thread(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    t = token()
    handle = await client.start(engine_app.calls_flow, {"token": t})
    out = await client.result(handle.workflow_id, timeout=5)
    assert out["sum"] == 5
    assert out["info"]["main_thread"] is False  # the plain def ran in a worker thread
    assert engine_app.CALLS[t] == ["sync"]
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.status == Status.COMPLETED
    assert state.step == 2
    history = await client.history(handle.workflow_id)
    assert [(h.kind, h.name, h.status, h.result) for h in history] == [
        ("task", "engine_app.add", "done", 5),
        ("task", "engine_app.where_am_i", "done", out["info"]),
    ]


async def test_plain_def_tasks_block_only_their_own_thread(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app, concurrency=10)
    handle = await client.start(engine_app.blocking_flow, {"n": 4, "seconds": 0.4})
    began = asyncio.get_running_loop().time()
    assert await client.result(handle.workflow_id, timeout=5) == [0.4] * 4
    # one after the other they would take 1.6 s; in threads they overlap
    assert asyncio.get_running_loop().time() - began < 1.5


# -- timers -----------------------------------------------------------------------------------------------


async def test_sleep_in_every_duration_form_and_sleep_until(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    roles.scheduler()
    handle = await client.start(engine_app.sleeps_flow, {})
    out = await client.result(handle.workflow_id, timeout=8)
    history = await client.history(handle.workflow_id)
    assert [(h.kind, h.status) for h in history] == [("sleep", "done")] * 4
    assert [h.name for h in history[:3]] == ["200ms", "0.2s", "0.2s"]
    for entry in history[:3]:
        assert entry.started_at is not None
        assert entry.finished_at is not None
        assert entry.finished_at - entry.started_at >= timedelta(milliseconds=200)
    target = datetime.fromisoformat(out["target"])
    assert history[3].finished_at is not None
    # ms precision in the history: the timer fired at its due time or later, never before
    assert history[3].finished_at >= target - timedelta(milliseconds=1)
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.step == 4
    assert state.updated_at - state.created_at >= timedelta(milliseconds=800)


# -- children ---------------------------------------------------------------------------------------------


async def test_child_workflows_return_results_and_raise_child_errors(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    parent_id = f"parent-{token()}"
    child_id = f"child-{token()}"
    await client.start(engine_app.parent_flow, {"child_id": child_id}, workflow_id=parent_id)
    out = await client.result(parent_id, timeout=5)
    assert out["default"] == 42
    assert out["named"] == 10
    failure = out["failure"]
    assert failure is not None
    assert failure["error_type"] == "ValueError"
    assert "child says no" in failure["message"]

    named = await client.get_state(child_id)
    assert named is not None
    assert (named.name, named.status, named.output, named.parent_id) == (
        "child_double",
        "COMPLETED",
        10,
        parent_id,
    )
    failed = await client.get_state(failure["workflow_id"])
    assert failed is not None
    assert (failed.name, failed.status, failed.parent_id) == ("child_fails", "FAILED", parent_id)
    history = await client.history(parent_id)
    assert [(h.kind, h.name, h.status) for h in history] == [
        ("child", "child_double", "done"),
        ("child", "child_double", "done"),
        ("child", "child_fails", "failed"),
    ]
    default_child = await client.get_state(f"{parent_id}:1")  # the default id: parent id and call number
    assert default_child is not None
    assert (default_child.output, default_child.parent_id) == (42, parent_id)


async def test_an_uncaught_child_failure_fails_the_parent(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    handle = await client.start(engine_app.uncaught_child_flow, {})
    with pytest.raises(WorkflowFailedError) as raised:
        await client.result(handle.workflow_id, timeout=5)
    assert raised.value.error_type == "ChildWorkflowError"
    assert "child says uncaught" in raised.value.message
    child = await client.get_state(f"{handle.workflow_id}:1")
    assert child is not None
    assert child.status == Status.FAILED


async def test_an_exception_in_workflow_code_fails_it_with_type_message_and_traceback(
    client: Client, roles: InProcessRoles
) -> None:
    roles.dispatcher(engine_app)
    handle = await client.start(engine_app.fails_flow, {"n": 7})
    with pytest.raises(WorkflowFailedError) as raised:
        await client.result(handle.workflow_id, timeout=5)
    error = raised.value
    assert (error.workflow_id, error.error_type, error.message) == (
        handle.workflow_id,
        "ValueError",
        "bad input 7",
    )
    assert error.traceback is not None
    assert "fails_flow" in error.traceback
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.status == Status.FAILED
    assert state.error is not None
    assert state.error["type"] == "ValueError"


async def test_a_task_result_that_does_not_match_its_annotation_fails_the_call_at_once(
    client: Client, roles: InProcessRoles
) -> None:
    """Checked where it is returned: the call fails with TaskFailedError (catchable, like any task failure), and
    is not retried (the same code would return the same); the history does not record it as done."""
    roles.dispatcher(engine_app)
    t = token()
    handle = await client.start(engine_app.catch_flow, {"token": t, "task": "answers_none"})
    failure = await client.result(handle.workflow_id, timeout=10)
    assert failure["task_name"] == "engine_app.answers_none"
    assert failure["attempts"] == 1
    assert failure["error_type"] == "TypeError"
    assert "the result of task engine_app.answers_none does not match str" in failure["message"]
    assert engine_app.CALLS[t] == ["answered"]
    [entry] = await client.history(handle.workflow_id)
    assert (entry.kind, entry.status) == ("task", "failed")


async def test_arguments_that_do_not_match_the_task_fail_the_call_at_once(
    client: Client, roles: InProcessRoles
) -> None:
    """The function never runs, and no attempt is spent retrying what would fail the same way."""
    roles.dispatcher(engine_app)
    t = token()
    handle = await client.start(engine_app.catch_flow, {"token": t, "task": "wrong_argument"})
    failure = await client.result(handle.workflow_id, timeout=10)
    assert (failure["task_name"], failure["attempts"], failure["error_type"]) == (
        "engine_app.takes_a_number", 1, "TypeError",
    )  # fmt: skip
    assert "argument 'n' of engine_app.takes_a_number does not match int" in failure["message"]
    assert engine_app.CALLS[t] == []


async def test_a_workflow_output_that_does_not_match_its_annotation_fails_it(
    client: Client, roles: InProcessRoles
) -> None:
    roles.dispatcher(engine_app)
    handle = await client.start(engine_app.wrong_output_flow, {})
    with pytest.raises(WorkflowFailedError) as raised:
        await handle.result(timeout=10)
    assert raised.value.error_type == "TypeError"
    assert "the output of wrong_output_flow does not match int" in raised.value.message
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.status == Status.FAILED


async def test_sleep_until_a_past_time_wakes_at_once(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    roles.scheduler()
    handle = await client.start(engine_app.past_sleep_flow, {})
    assert await client.result(handle.workflow_id, timeout=2) == "woke"


# -- determinism ------------------------------------------------------------------------------------------


async def test_now_uuid4_random_are_recorded_and_stable_across_replays(client: Client, roles: InProcessRoles) -> None:
    # cache_size=0: the dispatcher keeps no copy in memory, so every step replays from the history
    roles.dispatcher(engine_app, cache_size=0)
    roles.scheduler()
    handle = await client.start(engine_app.deterministic_flow, {})
    out = await client.result(handle.workflow_id, timeout=5)
    history = await client.history(handle.workflow_id)
    assert [h.kind for h in history] == ["task", "sleep", "task"]
    # what the first run passed to its tasks is what every later replay computed again
    assert history[0].result == out["before"]
    assert history[2].result == out["after"]
    assert out["before"][0] != out["after"][0]
    before_uuid = uuid.UUID(out["before"][0])
    assert before_uuid.version == 4
    assert 0 <= out["before"][2] < 1
    assert datetime.fromisoformat(out["before"][1]).tzinfo is not None
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.step == 3  # now/uuid4/random are not steps


async def test_signal_is_recorded_exactly_once_across_replays(
    client: Client, roles: InProcessRoles, prefix: str
) -> None:
    roles.dispatcher(engine_app, cache_size=0)
    roles.scheduler()
    handle = await client.start(engine_app.signal_flow, {})
    assert await client.result(handle.workflow_id, timeout=5) == "ok"
    history = await client.history(handle.workflow_id)
    assert [(h.kind, h.name, h.status) for h in history] == [
        ("signal", "progress", "done"),
        ("sleep", "50ms", "done"),
        ("task", "engine_app.echo", "done"),
    ]
    shard = client.keys.for_workflow(handle.workflow_id)
    signals = await client.store.redis.lrange(shard.signals(handle.workflow_id), 0, -1)
    assert len(signals) == 1
    assert '"pct":50' in signals[0]
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.step == 3


# -- control flow -----------------------------------------------------------------------------------------


async def test_loops_conditionals_and_helper_coroutines(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    handle = await client.start(engine_app.control_flow, {"n": 5, "values": [1, 2, 3]})
    out = await client.result(handle.workflow_id, timeout=5)
    # i=0,2,4 doubled (0+4+8); i=1,3 plus 100 (101+103)
    assert out == {"total": 216, "doubled": [2, 4, 6], "label": "big"}
    history = await client.history(handle.workflow_id)
    assert [h.name.rpartition(".")[2] for h in history] == ["double", "add", "double", "add", "double"] + ["double"] * 3
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.step == 8


async def test_gather_runs_tasks_in_parallel_and_nests(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app, concurrency=10)
    t = token()
    n = 4
    engine_app.BARRIERS[t] = asyncio.Barrier(n)  # only passes when all n calls are in flight together
    handle = await client.start(engine_app.gather_flow, {"token": t, "n": n})
    out = await client.result(handle.workflow_id, timeout=8)
    assert out == {"met": [0, 1, 2, 3], "nested": [[3, 20], [7, "e"], 100]}
    history = await client.history(handle.workflow_id)
    assert [h.status for h in history] == ["done"] * (n + 5)
    # each gathered call is one step; the n barrier calls were issued in one step
    met_calls = [h for h in history if h.name == "engine_app.meet"]
    assert len(met_calls) == n
    assert len({h.started_at for h in met_calls}) == 1
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.step == n + 5


async def test_a_failure_inside_gather_is_catchable_and_replays(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app, cache_size=0)  # every step replays the gather from the history
    handle = await client.start(engine_app.gather_failure_flow, {})
    out = await client.result(handle.workflow_id, timeout=5)
    assert out == {"caught": "in gather", "later": 20}


async def test_try_except_finally_around_a_failed_task(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    t = token()
    handle = await client.start(engine_app.try_flow, {"token": t})
    out = await client.result(handle.workflow_id, timeout=5)
    assert out["seen"] == [
        {"task_name": "engine_app.explode", "attempts": 1, "error_type": "ValueError", "message": "boom"},
        "finally",
    ]
    assert engine_app.CALLS[t] == ["finally"]
    history = await client.history(handle.workflow_id)
    assert [(h.name, h.status) for h in history] == [
        ("engine_app.explode", "failed"),
        ("engine_app.record", "done"),
    ]
