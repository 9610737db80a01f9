"""The records that cross between Python and Lua, and the payload codec, alone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bdurable.codec import dumps, encode_payload, from_json_value, to_json_value
from bdurable.errors import InvalidInputError, PayloadTooLargeError
from bdurable.wire import (
    CallRecord,
    CancelRequest,
    CommitReply,
    Delivery,
    ErrorRecord,
    Outcome,
    SleepCommand,
    StepClaim,
    StepDocument,
    TaskClaim,
    TaskCommand,
    WorkItem,
    call_ref,
    decode_claims,
    decode_inbox,
    parse_call_ref,
)

IDS = st.text(min_size=1, max_size=30)


@given(IDS, st.integers(1, 10**6))
def test_work_items_and_call_references_round_trip_whatever_the_id(workflow_id: str, seq: int) -> None:
    for item in (WorkItem("w", workflow_id), WorkItem("t", workflow_id, seq)):
        assert WorkItem.decode(item.encode()) == item
    assert parse_call_ref(call_ref(workflow_id, seq)) == (workflow_id, seq)


def test_inbox_entries_decode_to_deliveries_and_cancellations() -> None:
    assert decode_inbox('{"seq":3,"ok":true,"v":{"a":1}}') == Delivery(3, True, {"a": 1})
    failed = decode_inbox('{"seq":4,"ok":false,"err":{"type":"EventTimeoutError","message":"late","traceback":""}}')
    assert isinstance(failed, Delivery)
    assert failed.error == ErrorRecord("EventTimeoutError", "late")
    assert decode_inbox('{"cancel":"stop"}') == CancelRequest("stop")
    assert decode_inbox('{"cancel":null}') == CancelRequest(None)
    with pytest.raises(ValueError, match="not a JSON object"):
        decode_inbox("[1, 2]")


def test_an_error_record_keeps_its_own_fields_and_its_kind_specific_ones() -> None:
    record = ErrorRecord.from_exception(KeyError("k"))
    assert (record.type, record.message) == ("KeyError", "'k'")
    assert "KeyError" in record.traceback
    wrapped = ErrorRecord("TaskFailedError", "m", "", {"task_name": "t", "attempts": 2})
    assert ErrorRecord.decode(wrapped.encode()) == wrapped


def test_a_step_document_carries_its_payloads_beside_it_once() -> None:
    task = TaskCommand(1, "t", CallRecord("task", "t"), '{"args":["x"],"kwargs":{}}', "q", 3, 1000, 0, "raise")
    sleep = SleepCommand(2, "1s", CallRecord("sleep", "1s"), delay_ms=1000)
    document = StepDocument([task, sleep], "RUNNING", "task t", Outcome("COMPLETED", '"out"', None))
    text, payloads = document.encode()
    data = json.loads(text)
    assert payloads == ['{"args":["x"],"kwargs":{}}', '"out"']  # as they are: not escaped into the document
    assert data["calls"][0]["p"] == 1
    assert data["outcome"] == {"status": "COMPLETED", "p": 2, "error": "", "next_seq": 0}
    assert json.loads(data["calls"][0]["rec"]) == {"k": "task", "n": "t"}


def test_claims_and_commit_replies_decode_from_the_scripts_lists() -> None:
    step = [
        "w",
        0,
        "wf",
        7,
        "flow",
        "1",
        '{"x":1}',
        -1,
        "-1",
        ['{"seq":1,"ok":true,"v":2}'],
        ["1", '{"k":"task"}'],
        5,
        40,
    ]
    task = ["t", 1, "wf", 2, 8, ["name", "t", "args", "{}", "attempts", "1", "max_attempts", "3"]]
    reply = CommitReply.decode(["dead", [step, task], "0-9"])
    first, second = reply.claims
    assert isinstance(first, StepClaim)
    assert isinstance(second, TaskClaim)
    assert (first.lease, first.inbox_start, first.calls) == ("7", -1, {"1": '{"k":"task"}'})
    assert (first.priority, first.seq_base) == (5, 40)  # a continued run's calls are numbered after 40
    assert (second.suspect, second.seq, second.call.attempt, second.call.max_attempts) == (True, 2, 2, 3)
    assert (reply.status, reply.dead_letter) == ("dead", "0-9")
    assert decode_claims([]) == []


@dataclass
class Point:
    x: int
    when: datetime


def test_typed_values_become_json_once_and_come_back_as_their_types() -> None:
    value = Point(1, datetime(2026, 1, 2, tzinfo=UTC))
    text = encode_payload(value, what="input", max_bytes=1000)
    assert json.loads(text) == {"x": 1, "when": "2026-01-02T00:00:00Z"}
    assert from_json_value(json.loads(text), Point, what="input") == value
    with pytest.raises(InvalidInputError, match="x"):
        from_json_value({"x": "nope", "when": "2026-01-02"}, Point, what="input")


def test_an_oversized_payload_is_refused_before_anything_is_written() -> None:
    with pytest.raises(PayloadTooLargeError, match="over the limit of 10 bytes"):
        encode_payload("x" * 20, what="input", max_bytes=10)
    assert encode_payload(to_json_value([1, 2]), what="input", max_bytes=10, json_ready=True) == dumps([1, 2])
