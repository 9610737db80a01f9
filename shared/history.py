"""A workflow's recorded history as one self-contained document, for replaying it away from Redis.

``bdurable export ID`` (and :func:`export`) writes it; ``bdurable replay`` and
:class:`bdurable.testing.Replayer` check today's code against it. The document is pretty-printed JSON meant to
be read by people and kept in a repository as a test fixture::

    {
      "format": "bdurable-history/1",
      "workflow_id": "order-42", "run": 1, "seq_base": 0, "name": "order_flow", "version": "3",
      "status": "COMPLETED", "input": {...}, "output": {...}, "error": null,
      "created_at": "...", "finished_at": "...",
      "consumed": 6,
      "calls": [
        {"seq": 1, "kind": "task", "name": "shop.reserve", "record": {},
         "arguments": {"args": ["sku-1", 2], "kwargs": {}},
         "status": "done", "result": "r-17", "error": null, "started_at": "...", "finished_at": "..."},
        ...
      ],
      "inbox": [{"seq": 1, "ok": true, "v": "r-17"}, ...]
    }

``calls`` are the durable calls the workflow made, by sequence number: kind (task, child, sleep, event, signal,
value), name, ``record`` (the kind's own recorded fields: an event's ``key``, a child's ``id``, the ``v`` of a
``ctx.now()``/``uuid4()``/``random()``), ``arguments`` (a task's ``{"args", "kwargs"}``, a child's input, a
signal's payload; the key is absent for kinds without arguments), and the outcome (``result``, or ``error`` for
a call that failed). ``inbox`` is what replay needs: the results delivered to the workflow, in the order they
arrived, exactly as the engine stores them; ``consumed`` is how many of them the workflow's steps had run over
when it was exported (``null`` when no step had run yet). Payloads are the JSON values the workflow saw: sealed
ones are opened with the exporting process's keys (an exported history is plaintext: keep it like the data it
holds), and show as ``"<encrypted>"`` where that process lacks the key: such a history cannot be replayed, and
reading it says so (a payload whose whole value is that placeholder).
A history is one run's: after a continue-as-new, ``run`` counts the runs and ``seq_base`` how many calls earlier
runs made (this run's calls are numbered after them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeGuard

from bdurable.client import Client, validate_workflow_id
from bdurable.codec import decode, dumps, loads
from bdurable.errors import InvalidInputError, WorkflowNotFoundError
from bdurable.model import FINISHED, Status
from bdurable.payloads import ENCRYPTED, UNAVAILABLE, UNREADABLE, PayloadCodec
from bdurable.reads import ms
from bdurable.wire import CallRecord, SignalRecord, deliveries

__all__ = ["FORMAT", "History", "RecordedCall", "export", "from_record"]

FORMAT = "bdurable-history/1"

# The kinds of durable call a history records.
KINDS = ("task", "child", "sleep", "event", "signal", "value")

# The statuses a workflow can be exported in.
STATUSES = tuple(status.value for status in Status)


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One durable call of a history: what was called, with what, and what came of it."""

    seq: int
    kind: str
    name: str
    record: Mapping[str, Any] = field(default_factory=dict)
    arguments_json: str | None = None  # the arguments as the engine encodes them; None: the kind has none
    status: str = "pending"
    result: Any = None
    error: Mapping[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def arguments(self) -> Any:
        """The arguments as JSON data (``None`` when the call has none recorded)."""
        return None if self.arguments_json is None else loads(self.arguments_json)

    def call_record(self) -> CallRecord:
        """The record a replay checks the code's call against."""
        return CallRecord(self.kind, self.name, dict(self.record))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"seq": self.seq, "kind": self.kind, "name": self.name, "record": dict(self.record)}
        if self.arguments_json is not None:
            data["arguments"] = self.arguments
        data |= {
            "status": self.status,
            "result": self.result,
            "error": None if self.error is None else dict(self.error),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }
        return data


@dataclass(frozen=True, slots=True)
class History:
    """A workflow run's whole recorded history: identity, input, outcome, calls, and the inbox to replay."""

    workflow_id: str
    name: str
    version: str
    input: Any
    status: str
    run: int = 1
    seq_base: int = 0  # calls of earlier runs (continue-as-new): this run's calls are numbered after them
    output: Any = None
    error: Mapping[str, Any] | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    consumed: int | None = None
    calls: Sequence[RecordedCall] = ()
    inbox: Sequence[Mapping[str, Any]] = ()

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    # -- what a replay needs ---------------------------------------------------------------------------

    def call_records(self) -> dict[int, CallRecord]:
        return {call.seq: call.call_record() for call in self.calls}

    def recorded_arguments(self) -> dict[int, str]:
        return {call.seq: call.arguments_json for call in self.calls if call.arguments_json is not None}

    def inbox_entries(self) -> list[str]:
        """The inbox as the engine stores it (one JSON text per entry), in arrival order."""
        return [dumps(dict(entry)) for entry in self.inbox]

    # -- the document ----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The document as JSON data (see the module's docstring)."""
        return {
            "format": FORMAT,
            "workflow_id": self.workflow_id,
            "run": self.run,
            "seq_base": self.seq_base,
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": None if self.error is None else dict(self.error),
            "created_at": _iso(self.created_at),
            "finished_at": _iso(self.finished_at),
            "consumed": self.consumed,
            "calls": [call.to_json() for call in self.calls],
            "inbox": [dict(entry) for entry in self.inbox],
        }

    def to_text(self) -> str:
        """The document as pretty-printed JSON text, ending with a newline (what ``bdurable export`` writes)."""
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, data: Any, *, source: str = "history") -> History:
        """Read a document, checking every field: a malformed one raises ``InvalidInputError`` naming the
        field and what is wrong with it (``source`` names the document in the message)."""
        return _Reader(source).history(data)

    @classmethod
    def from_text(cls, text: str, *, source: str = "history") -> History:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        except RecursionError:  # nested deeper than Python parses (bdurable.codec.read_json refuses it alike)
            raise InvalidInputError(f"{source}: not valid JSON here: nested too deeply") from None
        return cls.from_json(data, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        """Read a history file; an unreadable or malformed file raises ``InvalidInputError``."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidInputError(f"{os.fspath(path)}: cannot read it: {reason}") from None
        return cls.from_text(text, source=os.fspath(path))


# -- export --------------------------------------------------------------------------------------------------


async def export(client: Client, workflow_id: str) -> History:
    """The history of one workflow as of one committed step, read through the client's reads
    (``WorkflowNotFoundError`` if the id is unknown or expired). A running workflow's history covers the steps
    that ran so far."""
    validate_workflow_id(workflow_id)
    fields, inbox, calls, signals = await client.reads.full_record(workflow_id)
    if "name" not in fields:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} (never started, or expired)")
    return from_record(workflow_id, fields, inbox, calls, signals, codec=client.reads.codec)


def from_record(
    workflow_id: str,
    fields: Mapping[str, str],
    inbox: Sequence[str],
    calls: Mapping[str, str],
    signals: Sequence[str] = (),
    *,
    codec: PayloadCodec | None = None,
) -> History:
    """A history from what Redis holds of a workflow: its hash, inbox, calls hash and signal log (as read), with
    sealed payloads opened by ``codec`` (placeholders where it lacks the key)."""
    if codec is not None:  # every text that may hold a sealed payload; the others come back unchanged
        inbox = [codec.open_text(raw, view=True) for raw in inbox]
        calls = {key: codec.open_text(raw, view=True) for key, raw in calls.items()}
        signals = [codec.open_text(raw, view=True) for raw in signals]
        fields = {key: codec.open_text(raw, view=True) if key in ("input", "output", "error") else raw
                  for key, raw in fields.items()}  # fmt: skip
    entries = [loads(raw) for raw in inbox]
    outcomes = deliveries(inbox)
    payloads = {record.seq: dumps(record.payload) for record in map(SignalRecord.decode, signals)}
    recorded = []
    for key, raw in calls.items():
        if not key.isdigit():
            continue
        seq = int(key)
        record = CallRecord.decode(raw)
        arguments = calls.get(f"{seq}:a") if record.kind in ("task", "child") else payloads.get(seq)
        delivered = outcomes.get(seq)
        result, error = None, None
        if record.kind == "value":
            result = record.value
        elif delivered is not None:
            result = delivered.value if delivered.ok else None
            error = None if delivered.ok or delivered.error is None else delivered.error.to_json()
        started, finished = calls.get(f"{seq}:t"), calls.get(f"{seq}:f")
        recorded.append(
            RecordedCall(
                seq=seq,
                kind=record.kind,
                name=record.name,
                record=dict(record.extra),
                # normalised: the replay compares it with the code's arguments, encoded by the same encoder
                arguments_json=None if arguments is None else dumps(loads(arguments)),
                status=calls.get(f"{seq}:s", "done" if record.kind == "value" else "pending"),
                result=result,
                error=error,
                started_at=ms(started) if started else None,
                finished_at=ms(finished) if finished else None,
            )
        )
    consumed = fields.get("cache_len")
    return History(
        workflow_id=workflow_id,
        name=fields.get("name", ""),
        version=fields.get("version", ""),
        input=decode(fields.get("input")),
        status=fields.get("status", ""),
        run=int(fields.get("run") or 1),
        seq_base=int(fields.get("seq_base") or 0),
        output=decode(fields["output"]) if fields.get("output") else None,
        error=decode(fields["error"]) if fields.get("error") else None,
        created_at=ms(fields["created_at"]) if fields.get("created_at") else None,
        finished_at=ms(fields["finished_at"]) if fields.get("finished_at") else None,
        consumed=int(consumed) if consumed else None,
        calls=tuple(sorted(recorded, key=lambda call: call.seq)),
        inbox=tuple(entries),
    )


# -- reading and checking a document -------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


class _Reader:
    """Checks a document field by field; every complaint names the document and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def bad(self, where: str, problem: str) -> InvalidInputError:
        return InvalidInputError(f"{self.source}: not a valid b-durable history: {where} {problem}")

    def history(self, data: Any) -> History:
        if not isinstance(data, dict):
            raise self.bad("the document", f"must be a JSON object, not {_json_type(data)}")
        if "format" not in data:
            raise self.bad("the document", 'has no "format" field (write histories with `bdurable export ID`)')
        if data["format"] != FORMAT:
            raise self.bad('"format"', f"is {data['format']!r}; this version of b-durable reads {FORMAT!r}")
        for required in ("workflow_id", "name", "version", "status", "input", "calls", "inbox"):
            if required not in data:
                raise self.bad("the document", f"has no {required!r} field")
        inbox = self.inbox(data["inbox"])
        if not isinstance(data["calls"], list):  # before reading the payloads of its calls
            raise self.bad('"calls"', f"must be a list, not {_json_type(data['calls'])}")
        self.readable(data)
        consumed = data.get("consumed")
        if consumed is not None and (not _is_int(consumed) or not 0 <= consumed <= len(inbox)):
            raise self.bad('"consumed"', f"must be null or an integer from 0 to {len(inbox)} (the inbox's length)")
        return History(
            workflow_id=self.text(data, "workflow_id"),
            name=self.text(data, "name"),
            version=self.text(data, "version"),
            input=data["input"],
            status=self.status(data),
            run=self.run(data.get("run", 1)),
            seq_base=self.seq_base(data.get("seq_base", 0)),
            output=data.get("output"),
            error=self.error(data.get("error"), '"error"'),
            created_at=self.moment(data.get("created_at"), '"created_at"'),
            finished_at=self.moment(data.get("finished_at"), '"finished_at"'),
            consumed=consumed,
            calls=self.calls(data["calls"]),
            inbox=inbox,
        )

    def readable(self, data: Mapping[str, Any]) -> None:
        """Refuse a history whose payloads were exported without their key: what replay would feed the code
        (the input, a call's arguments, a result) is a placeholder, so any verdict on it would be wrong."""
        payloads = [('"input"', data["input"])]
        for index, call in enumerate(data["calls"]):
            if isinstance(call, dict) and "arguments" in call:
                payloads.append((f'"calls[{index}].arguments"', call["arguments"]))
        for index, entry in enumerate(data["inbox"]):
            payloads.append((f'"inbox[{index}]"', entry.get("v")))
        for where, value in payloads:
            if value in (ENCRYPTED, UNREADABLE, UNAVAILABLE):
                raise InvalidInputError(
                    f"{self.source}: cannot be replayed: {where} is {value!r}, a payload the exporting process "
                    "could not open (export it again with BDURABLE_ENCRYPTION_KEYS set to the keys it was sealed with)"
                )

    def text(self, data: Mapping[str, Any], key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str):
            raise self.bad(f'"{key}"', f"must be a string, not {_json_type(value)}")
        if not value:
            raise self.bad(f'"{key}"', "must not be empty")
        return value

    def status(self, data: Mapping[str, Any]) -> str:
        value = self.text(data, "status")
        if value not in STATUSES:
            raise self.bad('"status"', f"must be a workflow status ({', '.join(STATUSES)}), not {value!r}")
        return value

    def run(self, value: Any) -> int:
        if not _is_int(value) or value < 1:
            raise self.bad('"run"', "must be a positive integer")
        return int(value)

    def seq_base(self, value: Any) -> int:
        if not _is_int(value) or value < 0:
            raise self.bad('"seq_base"', "must be an integer, 0 or more")
        return int(value)

    def error(self, value: Any, where: str) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            raise self.bad(where, 'must be null or an error record (an object with a string "type")')
        return value

    def moment(self, value: Any, where: str) -> datetime | None:
        if value is None:
            return None
        try:
            return datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise self.bad(where, f"must be null or an ISO 8601 time, not {value!r}") from None

    def calls(self, value: Any) -> tuple[RecordedCall, ...]:
        if not isinstance(value, list):
            raise self.bad('"calls"', f"must be a list, not {_json_type(value)}")
        calls: list[RecordedCall] = []
        seen: set[int] = set()
        for index, item in enumerate(value):
            call = self.call(item, f"calls[{index}]")
            if call.seq in seen:
                raise self.bad(f'"calls[{index}].seq"', f"repeats call #{call.seq}")
            seen.add(call.seq)
            calls.append(call)
        return tuple(sorted(calls, key=lambda call: call.seq))

    def call(self, item: Any, where: str) -> RecordedCall:
        if not isinstance(item, dict):
            raise self.bad(f'"{where}"', f"must be an object, not {_json_type(item)}")
        seq = item.get("seq")
        if not _is_int(seq) or seq < 1:
            raise self.bad(f'"{where}.seq"', "must be a positive integer")
        kind = item.get("kind")
        if kind not in KINDS:
            raise self.bad(f'"{where}.kind"', f"must be one of {', '.join(KINDS)}, not {kind!r}")
        name = item.get("name")
        if not isinstance(name, str):
            raise self.bad(f'"{where}.name"', "must be a string")
        record = item.get("record", {})
        if not isinstance(record, dict) or {"k", "n"} & set(record):
            raise self.bad(f'"{where}.record"', 'must be an object of the call\'s own fields (no "k" or "n")')
        status = item.get("status", "pending")
        if not isinstance(status, str):
            raise self.bad(f'"{where}.status"', "must be a string")
        if kind == "task":
            self.task_arguments(item, f"{where}.arguments")
        try:
            arguments = dumps(item["arguments"]) if "arguments" in item else None
        except ValueError as exc:
            raise self.bad(f'"{where}.arguments"', f"cannot be encoded: {exc}") from None
        except RecursionError:
            raise self.bad(f'"{where}.arguments"', "cannot be encoded: nested too deeply") from None
        return RecordedCall(
            seq=int(seq),
            kind=str(kind),
            name=name,
            record=record,
            arguments_json=arguments,
            status=status,
            result=item.get("result"),
            error=self.error(item.get("error"), f'"{where}.error"'),
            started_at=self.moment(item.get("started_at"), f'"{where}.started_at"'),
            finished_at=self.moment(item.get("finished_at"), f'"{where}.finished_at"'),
        )

    def task_arguments(self, item: Mapping[str, Any], where: str) -> None:
        """A task's arguments are what the engine stores for every task call, ``{"args": [...], "kwargs": {...}}``
        (a child's input and a signal's payload are any JSON value). Absent in a history of calls recorded before
        b-durable kept arguments: such a call replays without its arguments compared, as before."""
        shape = '{"args": [...], "kwargs": {...}}'
        if "arguments" not in item:
            return
        arguments = item["arguments"]
        if not isinstance(arguments, dict):
            raise self.bad(f'"{where}"', f"must be an object {shape}, not {_json_type(arguments)}")
        for key, kind, expected in (("args", list, "a list"), ("kwargs", dict, "an object")):
            if key not in arguments:
                raise self.bad(f'"{where}"', f"has no {key!r}: a task's arguments are {shape}")
            if not isinstance(arguments[key], kind):
                raise self.bad(f'"{where}.{key}"', f"must be {expected}, not {_json_type(arguments[key])}")
        others = sorted(set(arguments) - {"args", "kwargs"}, key=str)
        if others:
            raise self.bad(f'"{where}"', f"has other keys than 'args' and 'kwargs': {', '.join(map(repr, others))}")

    def inbox(self, value: Any) -> tuple[dict[str, Any], ...]:
        if not isinstance(value, list):
            raise self.bad('"inbox"', f"must be a list, not {_json_type(value)}")
        for index, entry in enumerate(value):
            where = f'"inbox[{index}]"'
            if not isinstance(entry, dict):
                raise self.bad(where, f"must be an object, not {_json_type(entry)}")
            if "cancel" in entry:
                if entry["cancel"] is not None and not isinstance(entry["cancel"], str):
                    raise self.bad(where, "is a cancellation whose reason is neither a string nor null")
                continue
            if not _is_int(entry.get("seq")) or entry["seq"] < 1:
                raise self.bad(where, 'must be a result (a positive integer "seq" and "ok") or a {"cancel": reason}')
            if not isinstance(entry.get("ok"), bool):
                raise self.bad(where, 'must say whether the call succeeded ("ok": true or false)')
            if not entry["ok"] and not isinstance(entry.get("err"), dict):
                raise self.bad(where, 'is a failed result without its error record ("err")')
        return tuple(value)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    """How JSON calls the type of a parsed value (for messages)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)
