"""``Replayer`` over hand-written histories: the paths a real run rarely takes, with no Redis at all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bdurable import Context, InvalidInputError, NonDeterminismError, TaskFailedError, task, workflow
from bdurable.history import History, RecordedCall
from bdurable.testing import Replayer


@task(name="off.a")
async def a(value: int) -> int:
    return value


@task(name="off.b")
async def b(value: int) -> int:
    return value


@workflow(name="pair", version="1")
async def pair(ctx: Context, input: int) -> list[int]:
    return list(await asyncio.gather(a(input), b(input)))


@workflow(name="pair", version="1")
async def pair_only_a(ctx: Context, input: int) -> list[int]:
    return [await a(input)]


@workflow(name="guarded", version="1")
async def guarded(ctx: Context, input: int) -> str:
    try:
        await a(input)
    except TaskFailedError:
        return "caught"
    await ctx.sleep("1h")
    return "slept"


@workflow(name="guarded", version="1")
async def guarded_unguarded(ctx: Context, input: int) -> str:
    await a(input)
    return "never"


@workflow(name="guarded", version="1")
async def guarded_typed(ctx: Context, input: dict[str, int]) -> str:
    await a(input["value"])
    return "typed"


@workflow(name="guarded", version="1")
async def guarded_longer_sleep(ctx: Context, input: int) -> str:
    try:
        await a(input)
    except TaskFailedError:
        return "caught"
    await ctx.sleep("2h")  # a sleep's duration may change: replay tolerates it, as production does
    return "slept"


def task_call(seq: int, name: str, value: int) -> RecordedCall:
    return RecordedCall(seq, "task", name, arguments_json=f'{{"args":[{value}],"kwargs":{{}}}}')


def ok(seq: int, value: Any) -> dict[str, Any]:
    return {"seq": seq, "ok": True, "v": value}


FAILED_A = {
    "seq": 1, "ok": False,
    "err": {"type": "TaskFailedError", "message": "boom", "traceback": "", "task_name": "off.a", "attempts": 3,
            "error_type": "ValueError"},
}  # fmt: skip


def history(name: str, status: str, calls: list[RecordedCall], inbox: list[dict[str, Any]], **rest: Any) -> History:
    rest.setdefault("consumed", len(inbox))
    return History(workflow_id="w-1", name=name, version="1", input=5, status=status, calls=tuple(calls),
                   inbox=tuple(inbox), **rest)  # fmt: skip


PAIR = history("pair", "COMPLETED", [task_call(1, "off.a", 5), task_call(2, "off.b", 5)], [ok(2, 5), ok(1, 5)],
               output=[5, 5])  # fmt: skip


async def test_results_in_another_order_than_the_calls_replay_identically() -> None:
    result = await Replayer(workflows=[pair]).replay(PAIR)
    assert (result.ok, result.status, result.calls) == (True, "COMPLETED", 2)


async def test_a_result_for_a_call_the_code_no_longer_makes_names_that_call() -> None:
    with pytest.raises(NonDeterminismError) as raised:
        await Replayer(workflows=[pair_only_a]).replay(PAIR)
    error = raised.value
    assert (error.seq, error.new) == (2, None)
    assert error.recorded == {"kind": "task", "name": "off.b", "arguments": {"args": [5], "kwargs": {}}}
    assert str(error) == "workflow 'w-1': call #2: recorded task 'off.b'(5), now nothing (the code waits on task off.a)"


async def test_a_failed_task_caught_by_the_code_replays_and_an_uncaught_one_ends_differently() -> None:
    recorded = history("guarded", "COMPLETED", [task_call(1, "off.a", 5)], [FAILED_A], output="caught")
    assert (await Replayer(workflows=[guarded]).replay(recorded)).ok
    with pytest.raises(NonDeterminismError) as raised:
        await Replayer(workflows=[guarded_unguarded]).replay(recorded)
    error = raised.value
    assert error.seq is None
    assert error.recorded == {"status": "COMPLETED", "output": "caught", "error": None}
    assert error.new is not None
    assert error.new["status"] == "FAILED"
    assert error.new["error"]["type"] == "TaskFailedError"
    assert str(error).startswith(
        """workflow 'w-1': at the end: recorded COMPLETED with output "caught", now FAILED with TaskFailedError: """
    )


async def test_a_cancellation_in_the_inbox_replays_to_the_same_cancelled_ending() -> None:
    recorded = history(
        "guarded", "CANCELLED", [task_call(1, "off.a", 5), RecordedCall(2, "sleep", "1h")],
        [ok(1, 5), {"cancel": "ops"}],
        error={"type": "WorkflowCancelledError", "message": "workflow cancelled: ops", "reason": "ops"},
    )  # fmt: skip
    result = await Replayer(workflows=[guarded]).replay(recorded)
    assert (result.ok, result.status) == (True, "CANCELLED")


async def test_a_sleep_may_change_its_duration() -> None:
    recorded = history("guarded", "SLEEPING", [task_call(1, "off.a", 5), RecordedCall(2, "sleep", "1h")], [ok(1, 5)])
    assert (await Replayer(workflows=[guarded_longer_sleep]).replay(recorded)).status == "SLEEPING"


async def test_entries_no_step_has_consumed_yet_are_not_replayed() -> None:
    """The task's result arrived but no step ran over it: what the code does next is not recorded yet."""
    recorded = history("guarded", "RUNNING", [task_call(1, "off.a", 5)], [ok(1, 5)], consumed=0)
    result = await Replayer(workflows=[guarded_unguarded]).replay(recorded)
    assert (result.ok, result.status) == (True, "RUNNING")


async def test_a_workflow_that_never_ran_a_step_replays_trivially() -> None:
    recorded = history("guarded", "RUNNING", [], [], consumed=None)
    assert (await Replayer(workflows=[guarded]).replay(recorded)).ok


async def test_an_input_the_code_no_longer_accepts_is_named_at_the_first_call() -> None:
    recorded = history("guarded", "COMPLETED", [task_call(1, "off.a", 5)], [FAILED_A], output="caught")
    with pytest.raises(NonDeterminismError) as raised:
        await Replayer(workflows=[guarded_typed]).replay(recorded)
    assert raised.value.seq == 1
    assert str(raised.value).startswith(
        "workflow 'w-1': call #1: recorded task 'off.a'(5), now nothing (the workflow ends there, FAILED: "
        "InvalidInputError: input of guarded does not match dict"
    )


async def test_histories_the_engine_failed_are_refused_or_compared_without_their_ending() -> None:
    calls = [task_call(1, "off.a", 5)]
    for engine_error in ("NonDeterminismError", "CorruptHistoryError"):
        failed = history("guarded", "FAILED", calls, [ok(1, 5)], error={"type": engine_error, "message": "m"})
        with pytest.raises(InvalidInputError, match=f"the engine failed this workflow with {engine_error}"):
            await Replayer(workflows=[guarded]).replay(failed)
    # a poison step (the step after the task's result kept killing dispatchers): the calls committed before it
    # are whole, and compared; its ending is the reaper's, not the code's, and not compared
    poisoned = history("guarded", "FAILED", calls, [ok(1, 5)], consumed=0,
                       error={"type": "PoisonStepError", "message": "m"})  # fmt: skip
    result = await Replayer(workflows=[guarded]).replay(poisoned)
    assert (result.ok, result.status) == (True, "RUNNING")
    with pytest.raises(NonDeterminismError, match=r"call #1: recorded task 'off\.b'\(5\), now task 'off\.a'\(5\)"):
        await Replayer(workflows=[pair]).replay(history("pair", "FAILED", [task_call(1, "off.b", 5)], [],
                                                        error={"type": "PoisonStepError", "message": "m"}))  # fmt: skip


async def test_replay_all_never_raises() -> None:
    results = await Replayer(workflows=[pair_only_a]).replay_all([PAIR, {"format": "nope"}, PAIR.to_json()])
    assert [r.ok for r in results] == [False, False, False]
    assert [r.divergence is not None for r in results] == [True, False, True]
    assert results[1].message.startswith("history: not a valid b-durable history:")
