"""The replay core alone: a ``WorkflowRun`` fed synthetic histories, with no Redis and no clock.

Each test drives a run the way a dispatcher does (start, feed inbox entries, take the step) and checks the
commands it would commit: the durable calls, their order and numbering, and the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
import structlog.testing

from bdurable import Context, DurableError, task, workflow
from bdurable.codec import dumps
from bdurable.replay.loop import StepLoop
from bdurable.replay.run import WorkflowRun
from bdurable.wire import (
    CallRecord,
    ChildCommand,
    ErrorRecord,
    EventCommand,
    SignalCommand,
    SleepCommand,
    TaskCommand,
    ValueCommand,
)


@task(name="unit.add")
async def add(a: int, b: int) -> int:
    return a + b


@task(name="unit.shout")
async def shout(text: str) -> str:
    return text.upper()


@workflow(name="unit_sum", version="1")
async def unit_sum(ctx: Context, input: list[int]) -> int:
    total = 0
    for value in input:
        total = await add(total, value)
    return total


@workflow(name="unit_fan", version="1")
async def unit_fan(ctx: Context, input: list[str]) -> list[str]:
    return list(await asyncio.gather(*(shout(text) for text in input)))


@workflow(name="unit_mixed", version="1")
async def unit_mixed(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    stamp = ctx.now()
    await ctx.sleep("1h")
    approval = await ctx.wait_for_event("approved", timeout="1 day")
    await ctx.signal("approved", approval)
    child = await ctx.execute(unit_sum, [1, 2])
    return {"stamp": stamp.isoformat(), "approval": approval, "child": child}


@workflow(name="unit_catches", version="1")
async def unit_catches(ctx: Context, input: None) -> str:
    try:
        await ctx.sleep(60)
        return "slept"
    except Exception as error:
        if error.is_cancellation:  # the seed's pattern: every durable error has is_cancellation
            await ctx.signal("cleaned", None)
            return "cancelled"
        raise


@workflow(name="unit_asyncio_timer", version="1")
async def unit_asyncio_timer(ctx: Context, input: None) -> str:
    try:
        await asyncio.sleep(5)  # not durable: refused
    except Exception as error:
        if error.is_cancellation:  # every error the engine raises has it (INTERFACE §5), this one too
            return "cancelled?"
        return f"{type(error).__name__} is a DurableError: {isinstance(error, DurableError)}"
    return "slept"


@pytest.fixture
def loop() -> Iterator[StepLoop]:
    step_loop = StepLoop()
    yield step_loop
    step_loop.close()


def run_of(loop: StepLoop, definition: Any, input_value: Any, recorded: dict[int, CallRecord] | None = None,
           committed_len: int = -1) -> WorkflowRun:  # fmt: skip
    run = WorkflowRun(
        loop=loop, definition=definition, workflow_id="wf-1", input_value=input_value, recorded=recorded or {},
        committed_len=committed_len, max_payload=1 << 20,
    )  # fmt: skip
    run.start()
    return run


def ok(seq: int, value: Any) -> str:
    return dumps({"seq": seq, "ok": True, "v": value})


def failed(seq: int, error: ErrorRecord) -> str:
    return dumps({"seq": seq, "ok": False, "err": error.to_json()})


def test_a_loop_of_task_calls_is_one_call_per_step_numbered_in_order(loop: StepLoop) -> None:
    run = run_of(loop, unit_sum, [5, 7])
    step = run.take_step()
    [call] = step.calls
    assert isinstance(call, TaskCommand)
    assert (call.seq, call.name, call.args) == (1, "unit.add", '{"args":[0,5],"kwargs":{}}')
    assert (step.status, step.outcome) == ("RUNNING", None)
    run.feed([ok(1, 5)])
    [call] = run.take_step().calls
    assert isinstance(call, TaskCommand)
    assert (call.seq, call.args) == (2, '{"args":[5,7],"kwargs":{}}')
    run.feed([ok(2, 12)])
    final = run.take_step()
    assert final.calls == []
    assert final.outcome is not None
    assert (final.outcome.status, final.outcome.output) == ("COMPLETED", "12")


def test_a_gather_issues_every_call_in_one_step_and_results_may_arrive_in_any_order(loop: StepLoop) -> None:
    run = run_of(loop, unit_fan, ["a", "b", "c"])
    step = run.take_step()
    assert [c.seq for c in step.calls] == [1, 2, 3]
    assert "unit.shout" in step.waiting_on
    run.feed([ok(3, "C"), ok(1, "A")])
    assert run.take_step().calls == []  # still waiting on #2: nothing new to do
    run.feed([ok(2, "B")])
    outcome = run.take_step().outcome
    assert outcome is not None
    assert outcome.output == '["A","B","C"]'


def test_replay_from_the_record_issues_no_calls_again_and_ends_the_same(loop: StepLoop) -> None:
    first = run_of(loop, unit_sum, [5, 7])
    first.take_step()
    first.feed([ok(1, 5)])
    first.take_step()
    recorded = dict(first.recorded)
    replayed = run_of(loop, unit_sum, [5, 7], recorded=recorded, committed_len=1)
    replayed.feed([ok(1, 5)])
    assert replayed.take_step().calls == []  # call #2 was recorded: not a new command
    replayed.feed([ok(2, 12)])
    outcome = replayed.take_step().outcome
    assert outcome is not None
    assert outcome.output == "12"


def test_every_kind_of_durable_call_becomes_its_command(loop: StepLoop) -> None:
    run = run_of(loop, unit_mixed, {})
    step = run.take_step()
    value, sleep = step.calls
    assert isinstance(value, ValueCommand)
    assert isinstance(sleep, SleepCommand)
    assert (value.seq, sleep.seq, sleep.delay_ms) == (1, 2, 3_600_000)
    assert step.status == "SLEEPING"
    run.feed([ok(2, None)])
    [event] = run.take_step().calls
    assert isinstance(event, EventCommand)
    assert (event.seq, event.name, event.key, event.timeout_ms) == (3, "approved", None, 86_400_000)
    run.feed([ok(3, {"by": "ada"})])
    signal, child = run.take_step().calls
    assert isinstance(signal, SignalCommand)
    assert isinstance(child, ChildCommand)
    assert (signal.seq, signal.payload) == (4, '{"by":"ada"}')
    assert (child.seq, child.child_id, child.input) == (5, "wf-1:5", "[1,2]")
    run.feed([ok(5, 3)])
    outcome = run.take_step().outcome
    assert outcome is not None
    assert outcome.status == "COMPLETED"


def test_a_failed_task_raises_task_failed_error_with_its_cause(loop: StepLoop) -> None:
    run = run_of(loop, unit_sum, [1])
    run.take_step()
    cause = ErrorRecord(
        "TaskFailedError", "boom", "", {"task_name": "unit.add", "attempts": 3, "error_type": "KeyError"}
    )
    run.feed([failed(1, cause)])
    outcome = run.take_step().outcome
    assert outcome is not None
    assert outcome.status == "FAILED"
    assert outcome.error is not None
    assert (outcome.error.type, "unit.add" in outcome.error.message) == ("TaskFailedError", True)


def test_code_that_calls_something_else_than_its_history_is_non_deterministic(loop: StepLoop) -> None:
    recorded = {1: CallRecord("task", "unit.shout")}  # the history says #1 was another task
    run = run_of(loop, unit_sum, [1], recorded=recorded, committed_len=1)
    run.feed([ok(1, "X")])
    outcome = run.take_step().outcome
    assert outcome is not None
    assert outcome.error is not None
    assert outcome.error.type == "NonDeterminismError"
    assert "call #1 is task 'unit.add' but the history recorded task 'unit.shout'" in outcome.error.message


def test_code_that_makes_fewer_calls_than_its_history_is_non_deterministic(loop: StepLoop) -> None:
    recorded = {1: CallRecord("task", "unit.add"), 2: CallRecord("task", "unit.add")}
    run = run_of(loop, unit_sum, [1], recorded=recorded, committed_len=2)  # the input has one value now
    run.feed([ok(1, 1), ok(2, 2)])
    outcome = run.take_step().outcome
    assert outcome is not None
    assert outcome.error is not None
    assert outcome.error.type == "NonDeterminismError"


def test_a_cancellation_raises_where_it_waits_and_cleanup_calls_are_new_commands(loop: StepLoop) -> None:
    run = run_of(loop, unit_catches, None)
    run.take_step()
    run.feed([dumps({"cancel": "stop"})])
    step = run.take_step()
    [cleanup] = step.calls
    assert isinstance(cleanup, SignalCommand)
    assert cleanup.name == "cleaned"
    assert step.cancelled == [1]  # the sleep is released
    assert step.outcome is not None
    assert (step.outcome.status, step.outcome.output) == ("CANCELLED", '"cancelled"')


def test_ctx_log_in_the_seeds_form_logs_and_is_silent_on_replay(loop: StepLoop) -> None:
    @workflow(name="unit_logs", version="1")
    async def unit_logs(ctx: Context, input: None) -> None:
        ctx.log("hello", n=1)
        ctx.log.warning("again")

    with structlog.testing.capture_logs() as logs:
        run_of(loop, unit_logs, None).take_step()
        run_of(loop, unit_logs, None, committed_len=5).take_step()  # a replay: says nothing
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [("hello", "info"), ("again", "warning")]
    assert logs[0]["n"] == 1
    assert logs[0]["workflow_id"] == "wf-1"


def test_an_asyncio_timer_raises_a_durable_error_with_is_cancellation(loop: StepLoop) -> None:
    outcome = run_of(loop, unit_asyncio_timer, None).take_step().outcome
    assert outcome is not None
    assert (outcome.status, outcome.output) == ("COMPLETED", '"WorkflowTimerError is a DurableError: True"')
