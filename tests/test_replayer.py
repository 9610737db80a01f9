"""Export and replay: a real workflow's history, exported from Redis, checked against changed code offline.

One run of ``replay_app.replay_order`` (a value, tasks, a sleep, an event, a child, a signal) is recorded once
for this module, exported while it waits for its event and again once it completed. Every replay below runs
without Redis: the same code replays both identically, and each changed module is caught at the right call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import replay_app
import replay_app_added
import replay_app_argument
import replay_app_output
import replay_app_removed
import replay_app_signal
import replay_app_swapped
from support import APPS, InProcessRoles, eventually, status_is
from typer.testing import CliRunner, Result

from bdurable import Client, InvalidInputError, NonDeterminismError, Settings, Status, UnknownWorkflowError
from bdurable.cli import app
from bdurable.embedded import RedisServer, free_port
from bdurable.history import FORMAT, History, export
from bdurable.testing import Replayer

INPUT = {"item": "sku-1", "quantity": 2}


@dataclass(frozen=True)
class Recorded:
    settings: Settings
    workflow_id: str
    output: Any
    waiting: History  # exported while the workflow waited for its event
    finished: History  # exported once it completed
    folder: Path  # both, as files: waiting.json, finished.json

    @property
    def env(self) -> dict[str, str]:
        return {"BDURABLE_REDIS_URL": self.settings.redis_url, "BDURABLE_PREFIX": self.settings.prefix}


@pytest.fixture(scope="module")
def recorded(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """Run ``replay_order`` once against a real Redis, with in-process roles, and export its history twice."""
    settings = Settings(
        redis_url=redis_server.url,
        prefix=f"rp{uuid.uuid4().hex[:8]}",
        heartbeat_interval=0.2,
        heartbeat_timeout=1.0,
    )
    workflow_id = f"order-{uuid.uuid4().hex[:8]}"

    async def record() -> tuple[Any, History, History]:
        roles = InProcessRoles(settings)
        try:
            async with Client(settings=settings) as client:
                roles.dispatcher(replay_app)
                roles.scheduler()
                roles.signal_bus()
                await client.start(replay_app.replay_order, INPUT, workflow_id=workflow_id)
                await eventually(lambda: status_is(client, workflow_id, Status.AWAITING_EVENT), timeout=10)
                waiting = await export(client, workflow_id)
                await client.send_event(workflow_id, "approved", {"by": "u7"})
                output = await client.result(workflow_id, timeout=10)
                return output, waiting, await export(client, workflow_id)
        finally:
            await roles.stop_all()

    output, waiting, finished = asyncio.run(record())
    folder = tmp_path_factory.mktemp("histories")
    (folder / "waiting.json").write_text(waiting.to_text())
    (folder / "finished.json").write_text(finished.to_text())
    return Recorded(settings, workflow_id, output, waiting, finished, folder)


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


# -- export ---------------------------------------------------------------------------------------------------


def test_the_export_holds_identity_input_outcome_and_every_call(recorded: Recorded) -> None:
    history = recorded.finished
    assert (history.workflow_id, history.name, history.version, history.run) == (
        recorded.workflow_id, "replay_order", "1", 1,
    )  # fmt: skip
    assert (history.input, history.status, history.output, history.error) == (
        INPUT, Status.COMPLETED, recorded.output, None,
    )  # fmt: skip
    assert recorded.output["paid"] == 40
    assert [(c.seq, c.kind, c.name) for c in history.calls] == [
        (1, "value", "uuid4"),
        (2, "task", "replay.reserve"),
        (3, "sleep", "50ms"),
        (4, "event", "approved"),
        (5, "child", "replay_child"),
        (6, "signal", "charging"),
        (7, "task", "replay.charge"),
    ]
    value, reserve, sleep, event, child, signal, charge = history.calls
    assert value.result == recorded.output["order"] == value.record["v"]
    assert (reserve.arguments, reserve.result, reserve.status) == (
        {"args": ["sku-1", 2], "kwargs": {}}, "r-sku-1-2", "done",
    )  # fmt: skip
    assert (sleep.arguments_json, event.arguments_json) == (None, None)  # kinds without arguments
    assert event.result == {"by": "u7"}
    assert (child.arguments, child.result, child.record["id"]) == (2, 4, f"{recorded.workflow_id}:5")
    assert signal.arguments == {"order": recorded.output["order"], "amount": 40}
    assert (charge.arguments, charge.result) == ({"args": ["r-sku-1-2", 40], "kwargs": {}}, 40)
    assert all(c.started_at is not None for c in history.calls if c.kind != "value")
    # the inbox: every result, in arrival order, all consumed by the steps that ran
    assert [entry["seq"] for entry in history.inbox] == [2, 3, 4, 5, 7]
    assert history.consumed == len(history.inbox)


def test_an_export_of_a_running_workflow_stops_where_it_waits(recorded: Recorded) -> None:
    history = recorded.waiting
    assert history.status == Status.AWAITING_EVENT
    assert (history.output, history.finished_at) == (None, None)
    assert [(c.kind, c.status) for c in history.calls] == [
        ("value", "done"), ("task", "done"), ("sleep", "done"), ("event", "pending"),
    ]  # fmt: skip
    assert history.consumed == len(history.inbox) == 2


def test_the_document_is_pretty_json_that_reads_back_the_same(recorded: Recorded) -> None:
    text = recorded.finished.to_text()
    assert text.startswith('{\n  "format": "bdurable-history/1",\n')
    assert json.loads(text)["format"] == FORMAT
    assert History.from_text(text) == recorded.finished
    assert History.load(recorded.folder / "finished.json") == recorded.finished


def test_export_cli_to_stdout_and_to_a_file(recorded: Recorded, tmp_path: Path) -> None:
    printed = cli("export", recorded.workflow_id, env=recorded.env)
    assert printed.exit_code == 0, printed.output
    assert History.from_text(printed.stdout) == recorded.finished
    as_json = cli("export", recorded.workflow_id, "--json", env=recorded.env)  # JSON already: the same document
    assert (as_json.exit_code, as_json.stdout) == (0, printed.stdout)

    target = tmp_path / "run.json"
    written = cli("export", recorded.workflow_id, "--output", str(target), env=recorded.env)
    assert written.exit_code == 0, written.output
    assert written.stdout == ""
    assert f"exported 7 calls of {recorded.workflow_id} (COMPLETED) to {target}" in written.stderr
    assert History.load(target) == recorded.finished


def test_export_cli_errors(recorded: Recorded, tmp_path: Path) -> None:
    unknown = cli("export", "no-such-workflow", env=recorded.env)
    assert unknown.exit_code == 3
    assert unknown.stderr.strip() == "error: no workflow with id 'no-such-workflow' (never started, or expired)"
    unwritable = cli("export", recorded.workflow_id, "--output", str(tmp_path / "missing" / "x.json"),
                     env=recorded.env)  # fmt: skip
    assert unwritable.exit_code == 2
    assert unwritable.stderr.startswith("error: cannot write ")
    unreachable = cli("export", "x", env={"BDURABLE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert unreachable.exit_code == 4


# -- replay: unchanged code -----------------------------------------------------------------------------------


async def test_unchanged_code_replays_both_histories_identically(recorded: Recorded) -> None:
    replayer = Replayer(apps=[replay_app])
    finished = await replayer.replay(recorded.finished)
    assert finished.ok
    assert (finished.calls, finished.recorded_status, finished.status) == (7, "COMPLETED", "COMPLETED")
    assert finished.message == f"workflow {recorded.workflow_id!r}: identical (7 calls, COMPLETED)"
    waiting = await replayer.replay(recorded.folder / "waiting.json")
    assert (waiting.ok, waiting.status) == (True, "AWAITING_EVENT")
    assert waiting.source == str(recorded.folder / "waiting.json")
    # from the document as data, and by module name
    assert (await Replayer(apps=["replay_app"]).replay(recorded.finished.to_json())).ok


# -- replay: changed code -------------------------------------------------------------------------------------

RESERVATION = "r-sku-1-2"
BRACE = "Expecting property name enclosed in double quotes"  # what json says of "{"


@pytest.mark.parametrize(
    ("module", "seq", "recorded_call", "new_call", "line"),
    [
        pytest.param(
            replay_app_swapped, 7,
            {"kind": "task", "name": "replay.charge", "arguments": {"args": [RESERVATION, 40], "kwargs": {}}},
            {"kind": "task", "name": "replay.refund", "arguments": {"args": [RESERVATION, 40], "kwargs": {}}},
            """call #7: recorded task 'replay.charge'("r-sku-1-2", 40), now task 'replay.refund'("r-sku-1-2", 40)""",
            id="a task swapped",
        ),
        pytest.param(
            replay_app_argument, 7,
            {"kind": "task", "name": "replay.charge", "arguments": {"args": [RESERVATION, 40], "kwargs": {}}},
            {"kind": "task", "name": "replay.charge", "arguments": {"args": [RESERVATION, 400], "kwargs": {}}},
            """call #7: recorded task 'replay.charge'("r-sku-1-2", 40), now task 'replay.charge'("r-sku-1-2", 400)""",
            id="an argument changed",
        ),
        pytest.param(
            replay_app_added, 8,
            None,
            {"kind": "task", "name": "replay.notify", "arguments": {"args": [RESERVATION], "kwargs": {}}},
            """call #8: recorded nothing (the history has 7 calls), now task 'replay.notify'("r-sku-1-2")""",
            id="a call added",
        ),
        pytest.param(
            replay_app_removed, 7,
            {"kind": "task", "name": "replay.charge", "arguments": {"args": [RESERVATION, 40], "kwargs": {}}},
            None,
            """call #7: recorded task 'replay.charge'("r-sku-1-2", 40), """
            """now nothing (the workflow ends there, COMPLETED)""",
            id="a call removed",
        ),
        pytest.param(
            replay_app_signal, 6,
            {"kind": "signal", "name": "charging", "arguments": {"order": "ORDER", "amount": 40}},
            {"kind": "signal", "name": "charging", "arguments": {"order": "ORDER", "cents": 4000}},
            """call #6: recorded signal 'charging'({"order": "ORDER", "amount": 40}), """
            """now signal 'charging'({"order": "ORDER", "cents": 4000})""",
            id="a signal payload changed",
        ),
    ],
)  # fmt: skip
async def test_changed_code_names_the_first_diverging_call(
    recorded: Recorded,
    module: Any,
    seq: int,
    recorded_call: dict[str, Any] | None,
    new_call: dict[str, Any] | None,
    line: str,
) -> None:
    order = recorded.output["order"]
    recorded_call, new_call = (_with_order(call, order) for call in (recorded_call, new_call))
    line = line.replace("ORDER", order)
    path = recorded.folder / "finished.json"
    with pytest.raises(NonDeterminismError) as raised:
        await Replayer(apps=[module]).replay(path)
    error = raised.value
    assert (error.seq, error.recorded, error.new) == (seq, recorded_call, new_call)
    assert str(error) == f"{path}: {line}"
    cause = error.__cause__  # the replay core's own error, kept as the cause: it carries the same structure
    assert isinstance(cause, NonDeterminismError)
    assert (cause.seq, cause.recorded, cause.new) == (seq, recorded_call, new_call)
    assert str(cause).startswith(f"workflow replay_order@1 ({recorded.workflow_id}) is non-deterministic: ")


def _with_order(call: dict[str, Any] | None, order: str) -> dict[str, Any] | None:
    if call is None or not isinstance(call.get("arguments"), dict) or "order" not in call["arguments"]:
        return call
    return {**call, "arguments": {**call["arguments"], "order": order}}


async def test_the_same_calls_with_another_ending_diverge_at_the_end(recorded: Recorded) -> None:
    with pytest.raises(NonDeterminismError) as raised:
        await Replayer(apps=[replay_app_output]).replay(recorded.finished)
    error = raised.value
    assert error.seq is None
    assert error.recorded == {"status": "COMPLETED", "output": recorded.output, "error": None}
    assert error.new == {"status": "COMPLETED", "output": {**recorded.output, "paid": 80}, "error": None}
    assert str(error).startswith(f"workflow {recorded.workflow_id!r}: at the end: recorded COMPLETED with output {{")
    # while it was still running, the ending was not known: that history replays identically
    assert (await Replayer(apps=[replay_app_output]).replay(recorded.waiting)).ok


async def test_arguments_spelled_by_another_json_encoder_are_the_same_values(recorded: Recorded) -> None:
    """Argument texts recorded by another encoder (an older b-durable's spelled 1e-7 as "1e-07"; here: spaces
    after the separators) hold the same values, so the replay is identical; a value whose type changed (40 to
    40.0) still diverges, at its call."""
    history = recorded.finished
    respelled = [
        dataclasses.replace(call, arguments_json=json.dumps(call.arguments)) if call.arguments_json else call
        for call in history.calls
    ]
    assert sum(a.arguments_json != b.arguments_json for a, b in zip(respelled, history.calls, strict=True)) >= 3
    assert (await Replayer(apps=[replay_app]).replay(dataclasses.replace(history, calls=respelled))).ok

    charge = next(call for call in history.calls if call.name == "replay.charge")
    assert charge.arguments == {"args": [RESERVATION, 40], "kwargs": {}}
    retyped = [
        dataclasses.replace(call, arguments_json=json.dumps({"args": [RESERVATION, 40.0], "kwargs": {}}))
        if call is charge
        else call
        for call in history.calls
    ]
    with pytest.raises(NonDeterminismError) as raised:
        await Replayer(apps=[replay_app]).replay(dataclasses.replace(history, calls=retyped))
    assert raised.value.seq == charge.seq

    # a hand-edited document whose argument holds text no encoder writes (an escaped lone surrogate) diverges
    # there too, reported as such rather than failing on the text
    document = history.to_json()
    for call in document["calls"]:
        if call["seq"] == charge.seq:
            call["arguments"]["args"][0] = "r-\udcff"
    with pytest.raises(NonDeterminismError) as raised:
        await Replayer(apps=[replay_app]).replay(json.loads(json.dumps(document)))
    assert raised.value.seq == charge.seq


async def test_a_change_after_the_recorded_part_of_a_running_workflow_passes(recorded: Recorded) -> None:
    """The waiting history ends at the event: code changed after it has nothing recorded to differ from."""
    for module in (replay_app_swapped, replay_app_argument, replay_app_added, replay_app_removed):
        assert (await Replayer(apps=[module]).replay(recorded.waiting)).ok


async def test_a_history_of_a_workflow_no_app_defines_is_refused(recorded: Recorded) -> None:
    import engine_app

    with pytest.raises(UnknownWorkflowError, match=r"no workflow replay_order@1 in the apps"):
        await Replayer(apps=[engine_app]).replay(recorded.finished)
    with pytest.raises(InvalidInputError, match="not a valid b-durable history"):
        await Replayer(apps=[replay_app]).replay({"format": FORMAT})


async def test_replay_all_reports_each_history(recorded: Recorded, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    results = await Replayer(apps=[replay_app_swapped]).replay_all(
        [recorded.folder / "waiting.json", recorded.folder / "finished.json", broken]
    )
    assert [r.ok for r in results] == [True, False, False]
    assert results[1].divergence is not None
    assert results[1].divergence.seq == 7
    assert results[2].problem is not None
    assert results[2].message == f"{broken}: not valid JSON: {BRACE} at line 1 column 2"


# -- replay: the command line ---------------------------------------------------------------------------------


def test_help_lists_export_and_replay() -> None:
    result = cli("--help")
    assert result.exit_code == 0
    assert "export" in result.stdout
    assert "replay" in result.stdout


def test_replay_cli_exits_0_when_every_history_replays_identically(recorded: Recorded) -> None:
    result = cli("replay", "--app", "replay_app", str(recorded.folder / "finished.json"),
                 str(recorded.folder / "waiting.json"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.strip() == "replayed 2 histories: 2 identical"
    folder = cli("replay", "--app", "replay_app", str(recorded.folder))  # a folder: its *.json files
    assert (folder.exit_code, folder.stderr.strip()) == (0, "replayed 2 histories: 2 identical")


def test_replay_cli_exits_1_with_one_line_per_diverging_file(recorded: Recorded) -> None:
    finished, waiting = recorded.folder / "finished.json", recorded.folder / "waiting.json"
    result = cli("replay", "--app", "replay_app_swapped", str(finished), str(waiting))
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [
        f"""{finished}: call #7: recorded task 'replay.charge'("r-sku-1-2", 40), """
        """now task 'replay.refund'("r-sku-1-2", 40)"""
    ]
    assert result.stderr.strip() == "replayed 2 histories: 1 identical, 1 diverged"


def test_replay_cli_json_prints_every_result(recorded: Recorded) -> None:
    finished, waiting = recorded.folder / "finished.json", recorded.folder / "waiting.json"
    result = cli("replay", "--app", "replay_app_argument", str(finished), str(waiting), "--json")
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    diverged, identical = document["results"]
    assert identical == {
        "source": str(waiting), "ok": True, "workflow_id": recorded.workflow_id, "name": "replay_order",
        "version": "1", "run": 1, "calls": 4, "recorded_status": "AWAITING_EVENT", "status": "AWAITING_EVENT",
        "divergence": None, "error": None,
    }  # fmt: skip
    assert diverged["ok"] is False
    assert diverged["divergence"]["seq"] == 7
    assert diverged["divergence"]["recorded"]["arguments"] == {"args": ["r-sku-1-2", 40], "kwargs": {}}
    assert diverged["divergence"]["new"]["arguments"] == {"args": ["r-sku-1-2", 400], "kwargs": {}}
    assert diverged["divergence"]["message"].startswith(f"{finished}: call #7: ")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", f"not valid JSON: {BRACE} at line 1 column 2"),
        ("[]", "not a valid b-durable history: the document must be a JSON object, not a list"),
        ('{"format": "bdurable-history/9"}', """not a valid b-durable history: "format" is 'bdurable-history/9'"""),
    ],
)
def test_replay_cli_exits_2_for_a_file_it_cannot_read(
    recorded: Recorded, tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = cli("replay", "--app", "replay_app", str(recorded.folder / "finished.json"), str(bad))
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()[:-1]  # then the summary
    assert line.startswith(f"error: {bad}: {message}")
    assert "Traceback" not in result.output


def test_replay_cli_refuses_a_history_nested_too_deeply_and_replays_the_others(
    recorded: Recorded, tmp_path: Path
) -> None:
    """JSON nested deeper than Python parses is refused like any malformed file: one ``error:`` line, exit 2,
    and the other files are still replayed."""
    deep = tmp_path / "deep.json"
    deep.write_text(f'{{"format": "{FORMAT}", "input": {"[" * 100_000}{"]" * 100_000}}}')
    finished = recorded.folder / "finished.json"
    result = cli("replay", "--app", "replay_app", str(deep), str(finished))
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {deep}: not valid JSON here: nested too deeply",
        "replayed 2 histories: 1 identical, 1 unreadable",
    ]
    assert "Traceback" not in result.output


async def test_replayer_refuses_a_history_nested_too_deeply(recorded: Recorded, tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text(f'{{"format": "{FORMAT}", "input": {"[" * 100_000}{"]" * 100_000}}}')
    replayer = Replayer(apps=[replay_app])
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        await replayer.replay(deep)
    results = await replayer.replay_all([deep, recorded.folder / "finished.json"])
    assert [r.ok for r in results] == [False, True]
    assert results[0].message == f"{deep}: not valid JSON here: nested too deeply"

    # a document given as data, a call's arguments nested as deeply: refused naming the field
    nested: list[Any] = []
    for _ in range(100_000):
        nested = [nested]
    document = recorded.finished.to_json()
    document["calls"][4]["arguments"] = nested  # the child's input
    message = 'history: not a valid b-durable history: "calls[4].arguments" cannot be encoded: nested too deeply'
    with pytest.raises(InvalidInputError) as raised:
        await replayer.replay(document)
    assert str(raised.value) == message
    [result] = await replayer.replay_all([document])
    assert result.message == message


TASK_ARGUMENTS = '{"args": [...], "kwargs": {...}}'


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda d: d.update(status="WHATEVER"),
            '"status" must be a workflow status (RUNNING, SLEEPING, ',
            id="an unknown status",
        ),
        pytest.param(
            lambda d: d["calls"][1].update(arguments=None),
            f'"calls[1].arguments" must be an object {TASK_ARGUMENTS}, not null',
            id="task arguments null",
        ),
        pytest.param(
            lambda d: d["calls"][1].update(arguments=["sku-1", 2]),
            f'"calls[1].arguments" must be an object {TASK_ARGUMENTS}, not a list',
            id="task arguments a list",
        ),
        pytest.param(
            lambda d: d["calls"][1].update(arguments={"args": 5}),
            '"calls[1].arguments.args" must be a list, not a number',
            id="task args a number",
        ),
        pytest.param(
            lambda d: d["calls"][1].update(arguments={"kwargs": {}}),
            f"\"calls[1].arguments\" has no 'args': a task's arguments are {TASK_ARGUMENTS}",
            id="task args missing",
        ),
        pytest.param(
            lambda d: d["calls"][1].update(arguments={"args": ["sku-1", 2]}),
            f"\"calls[1].arguments\" has no 'kwargs': a task's arguments are {TASK_ARGUMENTS}",
            id="task kwargs missing",
        ),
        pytest.param(
            lambda d: d["calls"][1].update(arguments={"args": ["sku-1", 2], "kwargs": []}),
            '"calls[1].arguments.kwargs" must be an object, not a list',
            id="task kwargs a list",
        ),
        pytest.param(
            lambda d: d["calls"][1].update(arguments={"args": ["sku-1", 2], "kwargs": {}, "retries": 3}),
            "\"calls[1].arguments\" has other keys than 'args' and 'kwargs': 'retries'",
            id="task arguments with another key",
        ),
        pytest.param(
            lambda d: d.update(calls=None),
            '"calls" must be a list, not null',
            id="calls null",
        ),
    ],
)
def test_replay_cli_exits_2_for_a_malformed_field(
    recorded: Recorded, tmp_path: Path, change: Any, message: str
) -> None:
    document = recorded.finished.to_json()
    assert [document["calls"][1][key] for key in ("kind", "name")] == ["task", "replay.reserve"]
    change(document)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    result = cli("replay", "--app", "replay_app", str(recorded.folder / "finished.json"), str(bad))
    assert result.exit_code == 2, result.output
    assert result.stdout == ""  # no divergence
    [line, summary] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}: not a valid b-durable history: {message}")
    assert summary == "replayed 2 histories: 1 identical, 1 unreadable"
    with pytest.raises(InvalidInputError, match="not a valid b-durable history"):
        History.from_json(document)


def test_a_childs_and_a_signals_arguments_have_no_fixed_shape(recorded: Recorded, tmp_path: Path) -> None:
    """Only a task's arguments have a shape: a child's input or a signal's payload is any JSON value, so other
    ones are read, and differ from what the code passes (exit 1), rather than refused."""
    document = recorded.finished.to_json()
    assert [call["kind"] for call in document["calls"][4:6]] == ["child", "signal"]
    document["calls"][4]["arguments"] = None
    document["calls"][5]["arguments"] = {"args": 5}
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(document))
    result = cli("replay", "--app", "replay_app", str(changed))
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith(f"{changed}: call #5: recorded child 'replay_child'(null), now child ")


def test_a_task_call_without_arguments_replays_as_before(recorded: Recorded, tmp_path: Path) -> None:
    """A history exported from calls recorded before b-durable kept arguments has none: it replays, its
    arguments not compared (only a task's arguments that are there must have their shape)."""
    document = recorded.finished.to_json()
    assert document["calls"][1]["kind"] == "task"
    del document["calls"][1]["arguments"]
    older = tmp_path / "older.json"
    older.write_text(json.dumps(document))
    result = cli("replay", "--app", "replay_app", str(older))
    assert result.exit_code == 0, result.output


def test_replay_cli_usage_errors_exit_2(recorded: Recorded, tmp_path: Path) -> None:
    finished = str(recorded.folder / "finished.json")
    assert cli("replay", finished).exit_code == 2  # --app is required
    assert cli("replay", "--app", "replay_app").exit_code == 2  # and at least one file
    missing = cli("replay", "--app", "no_such_module_here", finished)
    assert missing.exit_code == 2
    assert "cannot import --app module 'no_such_module_here'" in missing.stderr
    absent = cli("replay", "--app", "replay_app", str(tmp_path / "absent.json"))
    assert absent.exit_code == 2
    assert f"error: {tmp_path / 'absent.json'}: cannot read it: No such file or directory" in absent.stderr
    unknown = cli("replay", "--app", "engine_app", finished)
    assert unknown.exit_code == 2
    assert "no workflow replay_order@1 in the apps" in unknown.stderr


def test_replay_needs_no_redis(recorded: Recorded) -> None:
    """The replay command runs with Redis unreachable: nothing it does connects anywhere."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    environment = {**os.environ, "BDURABLE_REDIS_URL": closed,
                   "PYTHONPATH": os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    histories = [str(recorded.folder / "finished.json"), str(recorded.folder / "waiting.json")]
    same = subprocess.run(
        [sys.executable, "-m", "bdurable.cli", "replay", "--app", "replay_app", *histories],
        env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (same.returncode, same.stderr.strip()) == (0, "replayed 2 histories: 2 identical")
    changed = subprocess.run(
        [sys.executable, "-m", "bdurable.cli", "replay", "--app", "replay_app_removed", *histories],
        env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert changed.returncode == 1, changed.stderr
    assert "call #7: recorded task 'replay.charge'" in changed.stdout
