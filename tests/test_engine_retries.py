"""Task retries with backoff, the dead-letter queue, non-retryable errors, timeouts and payload limits."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator

import engine_app
import pytest
from support import InProcessRoles, token

from bdurable import Client, PayloadTooLargeError, Settings, Status, WorkflowFailedError


@pytest.fixture
def small_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, max_payload=1000)


@pytest.fixture
async def small_roles(small_settings: Settings) -> AsyncIterator[InProcessRoles]:
    """Roles whose payload limit is 1000 bytes."""
    started = InProcessRoles(small_settings)
    try:
        yield started
    finally:
        await started.stop_all()


async def test_task_failing_twice_then_succeeding_is_retried_with_backoff(
    client: Client, roles: InProcessRoles, prefix: str
) -> None:
    roles.dispatcher(engine_app)
    roles.scheduler()
    t = token()
    handle = await client.start(engine_app.flaky_flow, {"token": t})
    assert await client.result(handle.workflow_id, timeout=5) == 3
    attempts = engine_app.CALLS[t]
    assert len(attempts) == 3
    # exponential backoff from 50ms: about 50ms before the 2nd attempt, about 100ms before the 3rd
    assert attempts[1] - attempts[0] >= 0.05
    assert attempts[2] - attempts[1] >= 0.1
    history = await client.history(handle.workflow_id)
    assert [(h.kind, h.status, h.result, h.attempts) for h in history] == [("task", "done", 3, 3)]
    assert await client.dlq_list() == []


async def test_exhausted_task_goes_to_the_dead_letter_queue_and_raises_in_the_workflow(
    client: Client, roles: InProcessRoles, prefix: str
) -> None:
    roles.dispatcher(engine_app)
    roles.scheduler()
    t = token()
    handle = await client.start(engine_app.catch_flow, {"token": t, "task": "always_fails"})
    out = await client.result(handle.workflow_id, timeout=5)
    assert out == {
        "task_name": "engine_app.always_fails",
        "attempts": 2,
        "error_type": "RuntimeError",
        "message": "nope",
    }
    assert engine_app.CALLS[t] == ["attempt", "attempt"]
    [failed_call] = [h for h in await client.history(handle.workflow_id) if h.kind == "task"]
    assert (failed_call.status, failed_call.attempts) == ("failed", 2)

    shard = client.keys.for_workflow(handle.workflow_id)
    redis = client.store.redis
    entries = await redis.zrange(shard.dlq, 0, -1)
    assert len(entries) == 1
    entry = await redis.hgetall(shard.dlq_entry(entries[0]))
    assert entry["workflow_id"] == handle.workflow_id
    assert entry["task"] == "engine_app.always_fails"
    assert json.loads(entry["args"]) == {"args": [t], "kwargs": {}}
    error = json.loads(entry["error"])
    assert error["type"] == "RuntimeError"
    assert error["message"] == "nope"
    assert "Traceback" in error["traceback"]
    assert entry["attempts"] == "2"


async def test_non_retryable_error_skips_the_remaining_attempts(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    roles.scheduler()
    t = token()
    handle = await client.start(engine_app.catch_flow, {"token": t, "task": "refuses"})
    out = await client.result(handle.workflow_id, timeout=5)
    assert out == {
        "task_name": "engine_app.refuses",
        "attempts": 1,
        "error_type": "NonRetryableError",
        "message": "no way",
    }
    assert engine_app.CALLS[t] == ["attempt"]


@pytest.mark.parametrize(
    ("task", "error_type"),
    [
        ("exits", "SystemExit"),
        ("exits_in_a_thread", "KeyboardInterrupt"),
        ("raises_its_own_cancel", "CancelledError"),
        ("raises_a_base_exception", "Fatal"),
    ],
)
async def test_a_task_raising_past_except_exception_fails_its_attempt_and_nothing_else(
    client: Client, roles: InProcessRoles, task: str, error_type: str
) -> None:
    """``sys.exit`` in a task, or a ``CancelledError`` nobody sent it, is a failed attempt like any error: it
    is retried, then dead-lettered, and the dispatcher (here: this test's own process) goes on."""
    roles.dispatcher(engine_app)
    roles.scheduler()
    t = token()
    handle = await client.start(engine_app.catch_flow, {"token": t, "task": task})
    out = await client.result(handle.workflow_id, timeout=5)
    assert out == {
        "task_name": f"engine_app.{task}",
        "attempts": 2,
        "error_type": error_type,
        "message": out["message"],
    }
    assert engine_app.CALLS[t] == ["attempt", "attempt"]
    [entry] = await client.dlq_list()
    assert (entry.workflow_id, entry.attempts) == (handle.workflow_id, 2)
    again = await client.start(engine_app.quick, "still here")  # the dispatcher survived it
    assert await client.result(again.workflow_id, timeout=5) == "still here"


@pytest.mark.parametrize(
    ("how", "error_type", "message"),
    [
        ("exit", "SystemExit", "3"),
        ("exit in a gathered coroutine", "SystemExit", "3"),
        ("interrupt", "KeyboardInterrupt", ""),
    ],
)
async def test_workflow_code_raising_system_exit_fails_the_workflow_not_the_dispatcher(
    client: Client, roles: InProcessRoles, how: str, error_type: str, message: str
) -> None:
    roles.dispatcher(engine_app)
    handle = await client.start(engine_app.exit_flow, how)
    with pytest.raises(WorkflowFailedError) as failed:
        await client.result(handle.workflow_id, timeout=5)
    assert (failed.value.error_type, failed.value.message) == (error_type, message)
    again = await client.start(engine_app.quick, "still here")
    assert await client.result(again.workflow_id, timeout=5) == "still here"


async def test_timed_out_attempt_counts_as_a_failed_attempt(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    roles.scheduler()
    t = token()
    began = time.monotonic()
    handle = await client.start(engine_app.catch_flow, {"token": t, "task": "too_slow"})
    out = await client.result(handle.workflow_id, timeout=5)
    assert time.monotonic() - began < 1.0  # each attempt was cut at 100ms, never ran its 1s
    assert out["task_name"] == "engine_app.too_slow"
    assert out["attempts"] == 2
    assert out["error_type"] == "TimeoutError"
    assert engine_app.CALLS[t] == ["attempt", "attempt"]


async def test_oversized_task_result_fails_the_task_without_retry(client: Client, small_roles: InProcessRoles) -> None:
    small_roles.dispatcher(engine_app)
    small_roles.scheduler()
    t = token()
    handle = await client.start(engine_app.big_result_flow, {"token": t, "size": 2000})
    out = await client.result(handle.workflow_id, timeout=5)
    assert out["task_name"] == "engine_app.big_result"
    assert out["attempts"] == 1
    assert out["error_type"] == "PayloadTooLargeError"
    assert engine_app.CALLS[t] == ["attempt"]


async def test_oversized_task_argument_raises_at_the_workflows_await(
    client: Client, small_roles: InProcessRoles
) -> None:
    small_roles.dispatcher(engine_app)
    handle = await client.start(engine_app.big_argument_flow, {"size": 2000})
    assert await client.result(handle.workflow_id, timeout=5) == "caught"
    history = await client.history(handle.workflow_id)
    # the oversized call was never recorded; the workflow went on
    assert [(h.name, h.result) for h in history] == [("engine_app.echo", "still running")]


async def test_oversized_workflow_output_fails_the_workflow(client: Client, small_roles: InProcessRoles) -> None:
    small_roles.dispatcher(engine_app)
    handle = await client.start(engine_app.big_output_flow, {"size": 2000})
    with pytest.raises(WorkflowFailedError) as raised:
        await client.result(handle.workflow_id, timeout=5)
    assert raised.value.error_type == "PayloadTooLargeError"
    state = await client.get_state(handle.workflow_id)
    assert state is not None
    assert state.status == Status.FAILED
    assert state.output is None


async def test_oversized_input_is_refused_before_anything_is_written(small_settings: Settings, prefix: str) -> None:
    async with Client(settings=small_settings) as small_client:
        with pytest.raises(PayloadTooLargeError):
            await small_client.start(engine_app.quick, {"blob": "x" * 2000}, workflow_id="too-big")
        assert await small_client.get_state("too-big") is None
        redis = small_client.store.redis
        assert [key async for key in redis.scan_iter(match=f"*{prefix}*too-big*")] == []
        assert (await small_client.list()).items == []


@pytest.mark.parametrize("size", [10, 70_000])  # the finish message carries outputs up to 64 KiB; beyond, a read
async def test_result_returns_the_output_whether_or_not_the_finish_message_carries_it(
    client: Client, roles: InProcessRoles, size: int
) -> None:
    roles.dispatcher(engine_app)
    handle = await client.start(engine_app.big_output_flow, {"size": size})
    assert await client.result(handle.workflow_id, timeout=5) == "x" * size
    assert await client.result(handle.workflow_id, timeout=5) == "x" * size  # already finished: read
