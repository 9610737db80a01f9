"""The history document alone: built from what Redis holds, written, read back, and refused when malformed.

No Redis: the one test of ``export`` gives it a stand-in that answers its reads.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bdurable.codec import dumps
from bdurable.errors import DurableError, InvalidInputError, WorkflowNotFoundError
from bdurable.history import FORMAT, History, RecordedCall, export, from_record
from bdurable.keys import Keys
from bdurable.reads import Reads

# What Redis holds of a workflow that reserved, slept, got an event, failed a task, signalled and was cancelled.
FIELDS = {
    "name": "shop_flow", "version": "3", "status": "CANCELLED", "input": '{"sku":"s-1","n":2}',
    "output": '"gave up"',
    "error": '{"reason":"ops","type":"WorkflowCancelledError","message":"workflow cancelled: ops","traceback":"..."}',
    "created_at": "1765000000000", "finished_at": "1765000009000", "cache_len": "5", "step": "5", "run": "2",
}  # fmt: skip
CALLS = {
    "1": '{"k":"value","n":"now","v":"2025-12-06T05:46:40+00:00"}',
    "2": '{"k":"task","n":"shop.reserve"}', "2:a": '{"args":["s-1",2],"kwargs":{}}', "2:s": "done",
    "2:t": "1765000001000", "2:f": "1765000001500",
    "3": '{"k":"sleep","n":"1h"}', "3:s": "done", "3:t": "1765000002000", "3:f": "1765000003000",
    "4": '{"k":"event","n":"approved","key":"o-1"}', "4:s": "done", "4:t": "1765000003000", "4:f": "1765000004000",
    "5": '{"k":"task","n":"shop.charge"}', "5:a": '{"args":["r-1"],"kwargs":{"amount": 5}}', "5:s": "failed",
    "6": '{"k":"signal","n":"failed"}', "6:s": "done",
    "7": '{"k":"child","n":"refund_flow","id":"w:7","shard":0}', "7:a": "null", "7:s": "cancelled",
}  # fmt: skip
INBOX = [
    '{"seq":2,"ok":true,"v":"r-1"}',
    '{"seq":3,"ok":true,"v":null}',
    '{"seq":4,"ok":true,"v":{"by":"u7"}}',
    '{"seq":5,"ok":false,"err":{"type":"TaskFailedError","message":"no funds","traceback":"","task_name":"shop.c"}}',
    '{"cancel":"ops"}',
    '{"seq":9,"ok":true,"v":1}',
]
SIGNALS = ['{"seq":6,"name":"failed","payload":{"why":"no funds"},"at":1765000005000}']


def sample() -> History:
    return from_record("w", FIELDS, INBOX, CALLS, SIGNALS)


def test_a_history_is_built_from_the_workflows_keys() -> None:
    history = sample()
    assert (history.workflow_id, history.name, history.version, history.run, history.status) == (
        "w", "shop_flow", "3", 2, "CANCELLED",
    )  # fmt: skip
    assert (history.input, history.output, history.consumed) == ({"sku": "s-1", "n": 2}, "gave up", 5)
    assert history.error is not None
    assert history.error["reason"] == "ops"
    assert history.created_at == datetime(2025, 12, 6, 5, 46, 40, tzinfo=UTC)
    assert [(c.seq, c.kind, c.name, c.status) for c in history.calls] == [
        (1, "value", "now", "done"), (2, "task", "shop.reserve", "done"), (3, "sleep", "1h", "done"),
        (4, "event", "approved", "done"), (5, "task", "shop.charge", "failed"), (6, "signal", "failed", "done"),
        (7, "child", "refund_flow", "cancelled"),
    ]  # fmt: skip
    now, reserve, sleep, event, charge, signal, child = history.calls
    assert now.result == "2025-12-06T05:46:40+00:00"
    assert (reserve.arguments, reserve.result, reserve.error) == ({"args": ["s-1", 2], "kwargs": {}}, "r-1", None)
    assert reserve.finished_at == datetime(2025, 12, 6, 5, 46, 41, 500000, tzinfo=UTC)
    assert sleep.arguments_json is None
    assert (event.record, event.result) == ({"key": "o-1"}, {"by": "u7"})
    assert charge.result is None
    assert charge.error is not None
    assert (charge.error["type"], charge.error["message"]) == ("TaskFailedError", "no funds")
    assert charge.arguments_json == '{"args":["r-1"],"kwargs":{"amount":5}}'  # normalised: how the code encodes
    assert signal.arguments == {"why": "no funds"}  # from the signal log
    assert (child.arguments_json, child.arguments, child.record) == ("null", None, {"id": "w:7", "shard": 0})
    # what a replay is given
    assert history.recorded_arguments() == {
        2: '{"args":["s-1",2],"kwargs":{}}', 5: '{"args":["r-1"],"kwargs":{"amount":5}}',
        6: '{"why":"no funds"}', 7: "null",
    }  # fmt: skip
    assert history.call_records()[4].extra == {"key": "o-1"}
    assert [json.loads(entry) for entry in history.inbox_entries()] == [json.loads(entry) for entry in INBOX]


def test_the_document_round_trips_through_text_and_files(tmp_path: Path) -> None:
    history = sample()
    text = history.to_text()
    assert text.endswith("}\n")
    document = json.loads(text)
    assert list(document) == [
        "format", "workflow_id", "run", "seq_base", "name", "version", "status", "input", "output", "error",
        "created_at", "finished_at", "consumed", "calls", "inbox",
    ]  # fmt: skip
    assert document["format"] == FORMAT
    assert "arguments" not in document["calls"][2]  # a sleep has none
    assert document["calls"][6]["arguments"] is None  # a child started with None: recorded, and null
    assert History.from_text(text) == history
    assert History.from_json(document) == history
    path = tmp_path / "run.json"
    path.write_text(text)
    assert History.load(path) == history


def test_a_minimal_document_reads_with_defaults() -> None:
    document = {"format": FORMAT, "workflow_id": "w", "name": "f", "version": "1", "status": "RUNNING",
                "input": None, "calls": [{"seq": 1, "kind": "sleep", "name": "1h"}], "inbox": []}  # fmt: skip
    history = History.from_json(document)
    assert (history.run, history.consumed, history.output, history.error) == (1, None, None, None)
    assert history.calls == (RecordedCall(1, "sleep", "1h"),)


def valid() -> dict[str, Any]:
    document = sample().to_json()
    assert isinstance(document, dict)
    return document


def _set(path: str, value: Any) -> dict[str, Any]:
    """A valid document with one field replaced (``calls.0.seq``), or removed when ``value`` is ``...``."""
    document = valid()
    *parents, last = path.split(".")
    target: Any = document
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is ...:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return document


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (["a list"], "the document must be a JSON object, not a list"),
        (_set("format", ...), 'the document has no "format" field'),
        (_set("format", "bdurable-history/2"), """"format" is 'bdurable-history/2'; this version of b-durable reads"""),
        (_set("name", ...), "the document has no 'name' field"),
        (_set("name", ""), '"name" must not be empty'),
        (_set("version", 3), '"version" must be a string, not a number'),
        (_set("run", 0), '"run" must be a positive integer'),
        (_set("error", "boom"), '"error" must be null or an error record'),
        (_set("created_at", "yesterday"), """"created_at" must be null or an ISO 8601 time, not 'yesterday'"""),
        (_set("consumed", 7), '"consumed" must be null or an integer from 0 to 6'),
        (_set("calls", {}), '"calls" must be a list, not an object'),
        (_set("calls.0", 1), '"calls[0]" must be an object, not a number'),
        (_set("calls.1.seq", "2"), '"calls[1].seq" must be a positive integer'),
        (_set("calls.1.seq", True), '"calls[1].seq" must be a positive integer'),
        (_set("calls.2.seq", 1), '"calls[2].seq" repeats call #1'),
        (_set("calls.1.kind", "job"), "\"calls[1].kind\" must be one of task, child, sleep, event, signal, value"),
        (_set("calls.1.name", None), '"calls[1].name" must be a string'),
        (_set("calls.1.record", {"k": "task"}), '"calls[1].record" must be an object of the call\'s own fields'),
        (_set("calls.1.error", []), '"calls[1].error" must be null or an error record'),
        (_set("calls.1.finished_at", 5), '"calls[1].finished_at" must be null or an ISO 8601 time, not 5'),
        (_set("inbox", "x"), '"inbox" must be a list, not a string'),
        (_set("inbox.0", None), '"inbox[0]" must be an object, not null'),
        (_set("inbox.0", {"ok": True}), '"inbox[0]" must be a result (a positive integer "seq" and "ok")'),
        (_set("inbox.0", {"seq": 2, "v": 1}), '"inbox[0]" must say whether the call succeeded'),
        (_set("inbox.0", {"seq": 2, "ok": False}), '"inbox[0]" is a failed result without its error record'),
        (_set("inbox.4", {"cancel": 3}), '"inbox[4]" is a cancellation whose reason is neither a string nor null'),
    ],
)  # fmt: skip
def test_a_malformed_document_is_refused_naming_what_is_wrong(document: Any, problem: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        History.from_json(document, source="run.json")
    assert str(raised.value).startswith(f"run.json: not a valid b-durable history: {problem}")


def test_unreadable_text_and_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"^run\.json: not valid JSON: Expecting value at line 2 column 1$"):
        History.from_text("\n", source="run.json")
    with pytest.raises(InvalidInputError, match=r"absent\.json: cannot read it: No such file or directory$"):
        History.load(tmp_path / "absent.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidInputError, match=r"binary\.json: cannot read it: 'utf-8' codec"):
        History.load(tmp_path / "binary.json")


def test_arguments_are_kept_as_the_engine_encodes_them() -> None:
    """The replay compares argument texts: reading a document encodes them exactly as the code's calls are."""
    document = valid()
    document["calls"][1]["arguments"] = {"args": ["é", 1.5, 10**20], "kwargs": {"b": None, "a": [True]}}
    call = History.from_json(document).calls[1]
    assert call.arguments_json == dumps({"args": ["é", 1.5, 10**20], "kwargs": {"b": None, "a": [True]}})


class _Pipeline:
    """Stands in for a redis-py pipeline: each ``execute`` answers the next scripted reply."""

    def __init__(self, replies: list[list[Any]]) -> None:
        self.replies = replies

    async def __aenter__(self) -> _Pipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def __getattr__(self, command: str) -> Any:
        return lambda *args, **kwargs: None

    async def execute(self) -> list[Any]:
        return self.replies.pop(0)


class _Redis:
    def __init__(self, replies: list[list[Any]]) -> None:
        self.replies = replies

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        assert transaction is False  # MULTI is not granted to the documented ACL users
        return _Pipeline(self.replies)


class _Client:
    def __init__(self, replies: list[list[Any]]) -> None:
        self.reads = Reads(_Redis(replies), Keys("p"))  # type: ignore[arg-type]  # a stand-in


async def test_export_reads_again_when_a_step_committed_while_it_read() -> None:
    """The calls must be those of the consumed count: a commit between the reads moves it, so it reads again."""
    fields = {"name": "f", "version": "1", "status": "RUNNING", "input": "1", "cache_len": "1"}
    torn = [fields, INBOX[:2], {"1": CALLS["2"], "2": CALLS["3"]}, [], "2"]  # a step committed meanwhile
    whole = [{**fields, "cache_len": "2"}, INBOX[:2], {"1": CALLS["2"], "2": CALLS["3"]}, [], "2"]
    replies = [torn, whole]
    history = await export(_Client(replies), "w")  # type: ignore[arg-type]  # a stand-in
    assert (history.consumed, len(history.calls), replies) == (2, 2, [])

    with pytest.raises(DurableError, match="committed a step during each of 20 reads"):
        await export(_Client([torn] * 20), "w")  # type: ignore[arg-type]  # a stand-in
    with pytest.raises(WorkflowNotFoundError, match="no workflow with id 'w'"):
        await export(_Client([[{}, [], {}, [], None]]), "w")  # type: ignore[arg-type]  # a stand-in
