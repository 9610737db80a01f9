"""Every record that crosses between Python and the Lua scripts, typed, with one encoder and one decoder each.

What crosses, and who builds it (each record has one builder per language that builds it; ``lib.lua``'s
helpers of the same name are the Lua side):

- work items ``w|<id>`` and ``t|<seq>|<id>`` (ready queues, processing hashes): built in Lua
  (``item_step``, ``item_task``), read here (:class:`WorkItem`);
- call references ``<seq>|<id>`` (keyed waiters, the cancel channel) and timer members ``<kind>|<seq>|<id>``:
  built in Lua, read here;
- call records (``calls`` hash): built here (:class:`CallRecord`), read in Lua (kind, name, key, id, shard);
- the step document a dispatcher commits: built here (:class:`StepDocument`), read by ``commit_step.lua``;
  payloads travel beside it as their own script arguments, never re-encoded inside it;
- inbox entries (results of durable calls, cancellations): built in Lua (``inbox_ok``, ``inbox_error``,
  ``inbox_cancel``), read here (:func:`decode_inbox`);
- error records ``{"type", "message", "traceback", ...}``: built here from exceptions and in Lua for the
  engine's own errors (``error_record``), read by both;
- signal records and channel messages: built in Lua, read here;
- every script's reply: built in Lua, decoded here into the dataclasses at the end of this module.

Payloads (inputs, outputs, arguments, results, events, signals) are JSON text that Lua never parses: it
embeds them as they are, so a payload is encoded once on its way in and decoded once on its way out.
"""

from __future__ import annotations

import traceback as traceback_module
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bdurable.codec import dumps, loads

__all__ = [
    "CallRecord",
    "CancelRequest",
    "ChildCommand",
    "Claim",
    "CommitReply",
    "Delivery",
    "ErrorRecord",
    "EventCommand",
    "FollowingStep",
    "LostAttempt",
    "NewCall",
    "Outcome",
    "ReapReply",
    "Sealer",
    "SignalCommand",
    "SignalRecord",
    "SleepCommand",
    "StepClaim",
    "StepDocument",
    "TaskCall",
    "TaskClaim",
    "TaskCommand",
    "ValueCommand",
    "WorkItem",
    "decode_claims",
    "decode_inbox",
    "inbox_ok",
]

# -- work items, call references, timer members --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkItem:
    """An item of a ready queue and of a processing hash: one workflow step, or one task call."""

    kind: Literal["w", "t", "l"]  # a step, a task call, a call of a limited task
    workflow_id: str
    seq: int = 0

    def encode(self) -> str:
        return f"w|{self.workflow_id}" if self.kind == "w" else f"{self.kind}|{self.seq}|{self.workflow_id}"

    @classmethod
    def decode(cls, text: str) -> WorkItem:
        kind, _, rest = text.partition("|")
        if kind == "w":
            return cls("w", rest)
        if kind in ("t", "l"):
            seq, _, workflow_id = rest.partition("|")
            return cls("l" if kind == "l" else "t", workflow_id, int(seq))
        raise ValueError(f"not a work item: {text!r}")


def call_ref(workflow_id: str, seq: int) -> str:
    """``<seq>|<id>``: one durable call of one workflow (the cancel channel's messages, keyed waiters)."""
    return f"{seq}|{workflow_id}"


def parse_call_ref(text: str) -> tuple[str, int]:
    seq, _, workflow_id = text.partition("|")
    return workflow_id, int(seq)


def timer_member(kind: Literal["s", "r", "e"], workflow_id: str, seq: int) -> str:
    """A timer of a durable call: ``s`` a sleep, ``r`` a delayed retry, ``e`` an event wait's timeout."""
    return f"{kind}|{seq}|{workflow_id}"


def parse_timer_member(text: str) -> tuple[str, str, int]:
    """``(kind, workflow id, seq)`` of a durable call's timer."""
    kind, _, rest = text.partition("|")
    workflow_id, seq = parse_call_ref(rest)
    return kind, workflow_id, seq


# -- error records ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """An error as it crosses Redis: type name, message, formatted traceback, and kind-specific fields."""

    type: str
    message: str
    traceback: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorRecord:
        return cls(type(exc).__name__, str(exc), "".join(traceback_module.format_exception(exc)))

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "type": self.type, "message": self.message, "traceback": self.traceback}

    def encode(self) -> str:
        return dumps(self.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ErrorRecord:
        extra = {k: v for k, v in data.items() if k not in ("type", "message", "traceback")}
        return cls(
            str(data.get("type", "Error")), str(data.get("message", "")), str(data.get("traceback") or ""), extra
        )

    @classmethod
    def decode(cls, text: str) -> ErrorRecord:
        data = loads(text)
        if not isinstance(data, dict):
            raise ValueError("an error record is not a JSON object")
        return cls.from_json(data)


# -- call records and the commands of a step -------------------------------------------------------------------

CallKind = Literal["task", "child", "sleep", "event", "signal", "value"]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What the ``calls`` hash records of one durable call: its kind and name (replay checks both), plus a few
    kind-specific fields (an event's key, a child's id and shard, a deterministic value)."""

    kind: str
    name: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        return dumps({"k": self.kind, "n": self.name, **self.extra})

    @classmethod
    def decode(cls, text: str) -> CallRecord:
        data = loads(text)
        if not isinstance(data, dict):
            raise ValueError("a call record is not a JSON object")
        return cls(str(data.get("k")), str(data.get("n")), {k: v for k, v in data.items() if k not in ("k", "n")})

    @property
    def value(self) -> Any:
        """The recorded result of a ``value`` call (``ctx.now()``, ``ctx.uuid4()``, ``ctx.random()``)."""
        return self.extra.get("v")


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """A call's limit as the scripts enforce it: its id, its shard, its settings, and words for messages."""

    id: str
    shard: int
    concurrency: int | None
    rate_n: int | None
    rate_ms: int | None
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "shard": self.shard, "concurrency": self.concurrency, "rate_n": self.rate_n,
                "rate_ms": self.rate_ms, "text": self.text}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TaskCommand:
    seq: int
    name: str
    record: CallRecord
    args: str  # payload
    queue: str
    max_attempts: int
    backoff_ms: int
    timeout_ms: int
    on_exhausted: str
    limit: LimitSpec | None = None
    trace: str = ""  # W3C traceparent of the call (tracing on): its attempts' spans are its children
    origin: str = ""  # the calling workflow: name, version and step, for its attempts' log lines (`task_origin`)


def task_origin(name: str, version: str, step: int) -> str:
    """What a task call's hash keeps of its workflow (field ``of``), so that its attempts' log lines carry the
    workflow's ``name``, ``version`` and ``step`` as a step's do: read back by :attr:`TaskCall.origin`."""
    return f"{name}\t{version}\t{step}"


@dataclass(frozen=True, slots=True)
class SleepCommand:
    seq: int
    name: str
    record: CallRecord
    delay_ms: int | None = None
    due_ms: int | None = None


@dataclass(frozen=True, slots=True)
class EventCommand:
    seq: int
    name: str
    record: CallRecord
    key: str | None
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class ChildCommand:
    seq: int
    name: str
    record: CallRecord
    child_id: str
    shard: int
    version: str
    queue: str
    input: str  # payload
    trace: str = ""  # W3C traceparent the child's steps continue (tracing on)


@dataclass(frozen=True, slots=True)
class SignalCommand:
    seq: int
    name: str
    record: CallRecord
    payload: str  # payload


@dataclass(frozen=True, slots=True)
class ValueCommand:
    seq: int
    name: str
    record: CallRecord


NewCall = TaskCommand | SleepCommand | EventCommand | ChildCommand | SignalCommand | ValueCommand


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a workflow ended in this step: its final status, output (payload) and error record (or none).

    ``CONTINUED`` is not a final status: the run continues as new, ``output`` is the next run's input and
    ``next_seq`` how many calls the workflow made so far (the next run's calls are numbered after them).
    """

    status: str
    output: str  # payload
    error: ErrorRecord | None
    next_seq: int = 0


@dataclass(frozen=True, slots=True)
class Admission:
    """A workflow run's slot of its workflow's concurrency limit, taken (or queued for) before its first step."""

    limit: str
    shard: int
    queued: bool
    text: str  # what a QUEUED run waits for, in words


class Sealer(Protocol):
    """How payloads are stored (:class:`bdurable.payloads.PayloadCodec`): what a step document's encoder needs."""

    def seal(self, text: str) -> str: ...

    def seal_error(self, record: ErrorRecord) -> str: ...

    def seal_value(self, value: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class StepDocument:
    """What one replayed step commits: its new calls, the calls it released, and its status or outcome."""

    calls: Sequence[NewCall]
    status: str
    waiting_on: str
    outcome: Outcome | None
    abandon: Sequence[int] = ()
    cancelled: Sequence[int] = ()
    admission: Admission | None = None

    def encode(self, sealer: Sealer | None = None) -> tuple[str, list[str]]:
        """The document (JSON) and its payloads, which ``commit_step.lua`` reads as arguments ``p`` (1-based).

        ``sealer`` gives every payload, error record and recorded value its stored form (sealed when payloads are
        protected); without one they are stored as they are.
        """
        payloads: list[str] = []

        def ref(text: str) -> int:
            payloads.append(text if sealer is None else sealer.seal(text))
            return len(payloads)

        calls: list[dict[str, Any]] = []
        for call in self.calls:
            record = call.record
            if sealer is not None and "v" in record.extra:
                record = CallRecord(record.kind, record.name, {**record.extra, "v": sealer.seal_value(record.value)})
            entry: dict[str, Any] = {"seq": call.seq, "name": call.name, "rec": record.encode()}
            if isinstance(call, TaskCommand):
                entry |= {"kind": "task", "p": ref(call.args), "queue": call.queue, "max_attempts": call.max_attempts,
                          "backoff_ms": call.backoff_ms, "timeout_ms": call.timeout_ms,
                          "on_exhausted": call.on_exhausted}  # fmt: skip
                if call.limit is not None:
                    entry["limit"] = call.limit.to_json()
                if call.trace:
                    entry["trace"] = call.trace
                if call.origin:
                    entry["of"] = call.origin
            elif isinstance(call, SleepCommand):
                entry |= {"kind": "sleep", "delay_ms": call.delay_ms, "due_ms": call.due_ms}
            elif isinstance(call, EventCommand):
                entry |= {"kind": "event", "key": call.key, "timeout_ms": call.timeout_ms}
            elif isinstance(call, ChildCommand):
                entry |= {"kind": "child", "p": ref(call.input), "child_id": call.child_id, "shard": call.shard,
                          "version": call.version, "queue": call.queue}  # fmt: skip
                if call.trace:
                    entry["trace"] = call.trace
            elif isinstance(call, SignalCommand):
                entry |= {"kind": "signal", "p": ref(call.payload)}
            else:
                entry |= {"kind": "value"}
            calls.append(entry)
        outcome = None
        if self.outcome is not None:
            error = ""
            if self.outcome.error is not None:
                error = self.outcome.error.encode() if sealer is None else sealer.seal_error(self.outcome.error)
            outcome = {"status": self.outcome.status, "p": ref(self.outcome.output), "error": error,
                       "next_seq": self.outcome.next_seq}  # fmt: skip
        document = {
            "calls": calls,
            "status": self.status,
            "waiting_on": self.waiting_on,
            "outcome": outcome,
            "abandon": list(self.abandon),
            "cancelled": list(self.cancelled),
        }
        if self.admission is not None:
            a = self.admission
            document["admission"] = {"limit": a.limit, "shard": a.shard, "queued": a.queued, "text": a.text}
        return dumps(document), payloads


# -- what the workflow receives: inbox entries -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """The result of durable call ``seq``: a value (JSON data), or the error it failed with."""

    seq: int
    ok: bool
    value: Any = None
    error: ErrorRecord | None = None


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """The workflow was asked to cancel (``client.cancel``, or its parent's cancellation)."""

    reason: str | None


def deliveries(inbox: Iterable[str]) -> dict[int, Delivery]:
    """The results an inbox holds, by call (one per call: a result is delivered once)."""
    found: dict[int, Delivery] = {}
    for raw in inbox:
        entry = decode_inbox(raw)
        if isinstance(entry, Delivery):
            found.setdefault(entry.seq, entry)
    return found


def inbox_ok(seq: int, value: str) -> str:
    """The inbox entry of call ``seq`` returning ``value`` (JSON text): ``inbox_ok`` in lib.lua writes the same."""
    return f'{{"seq":{seq},"ok":true,"v":{value}}}'


def decode_inbox(text: str) -> Delivery | CancelRequest:
    data = loads(text)
    if not isinstance(data, dict):
        raise ValueError("an inbox entry is not a JSON object")
    if "cancel" in data:
        reason = data["cancel"]
        return CancelRequest(None if reason is None else str(reason))
    seq = int(data["seq"])
    if data.get("ok"):
        return Delivery(seq, True, data.get("v"))
    error = data.get("err")
    return Delivery(seq, False, error=ErrorRecord.from_json(error if isinstance(error, dict) else {}))


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One entry of a workflow's signal log (``ctx.signal``)."""

    seq: int
    name: str
    payload: Any
    at_ms: int

    @classmethod
    def decode(cls, text: str) -> SignalRecord:
        data = loads(text)
        return cls(int(data.get("seq", 0)), str(data["name"]), data.get("payload"), int(data.get("at", 0)))


@dataclass(frozen=True, slots=True)
class SignalsRead:
    """``read_signals``: the workflow's state (its hash, or only its status), and its signals from ``position``
    on (a position over all its runs: the reader's next ``seen`` is ``position + len(signals)``)."""

    state: dict[str, str]
    position: int
    signals: list[SignalRecord]

    @classmethod
    def decode(cls, raw: Sequence[Any], *, full: bool, open_text: Callable[[str], str] = str) -> SignalsRead:
        """``open_text`` opens the sealed payloads of a signal record (see :mod:`bdurable.payloads`)."""
        state_raw, position, entries = raw
        status_only = {"status": str(state_raw[0])} if state_raw and state_raw[0] else {}
        signals = [SignalRecord.decode(open_text(str(e))) for e in entries]
        return cls(_pairs(state_raw) if full else status_only, int(position), signals)

    @property
    def next_seen(self) -> int:
        return self.position + len(self.signals)


# -- claims ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskCall:
    """A task call as its hash holds it (what a dispatcher needs to run one attempt)."""

    name: str
    args: str  # payload
    queue: str
    attempts: int  # attempts that already ended (failed, timed out, lost with their dispatcher)
    max_attempts: int
    backoff_ms: int
    timeout_ms: int
    on_exhausted: str
    limited: bool = False  # it holds a permit of a limit while it runs
    trace: str = ""  # the W3C traceparent stored with the call (tracing on), which its attempts' spans continue
    of: str = ""  # its workflow's name, version and step when it called (``task_origin``); "" for older calls

    @property
    def attempt(self) -> int:
        """The number of the attempt about to run (1 for the first)."""
        return self.attempts + 1

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> TaskCall:
        return cls(
            name=fields.get("name", ""),
            args=fields.get("args", '{"args":[],"kwargs":{}}'),
            queue=fields.get("queue", "default"),
            attempts=int(fields.get("attempts") or 0),
            max_attempts=int(fields.get("max_attempts") or 1),
            backoff_ms=int(fields.get("backoff_ms") or 1000),
            timeout_ms=int(fields.get("timeout_ms") or 0),
            on_exhausted=fields.get("on_exhausted", "raise"),
            limited="limit" in fields,
            trace=fields.get("trace", ""),
            of=fields.get("of", ""),
        )

    @property
    def origin(self) -> dict[str, str | int]:
        """The calling workflow's ``name``, ``version`` and ``step``, as log fields (none for older calls)."""
        parts = self.of.split("\t")
        if len(parts) != 3 or not parts[2].isdigit():
            return {}
        return {"name": parts[0], "version": parts[1], "step": int(parts[2])}


@dataclass(frozen=True, slots=True)
class StepClaim:
    """A claimed workflow step, with the history the dispatcher needs to run it.

    ``inbox_start`` is where the dispatcher's cached copy of the run stopped (the entries that follow it are in
    ``entries``), or -1: no copy, ``entries`` is the whole inbox and ``calls`` the call records.
    ``committed_len`` is how many inbox entries earlier steps consumed (-1 before the first commit).
    """

    suspect: bool
    workflow_id: str
    lease: str
    name: str
    version: str
    input: str  # payload
    inbox_start: int
    committed_len: int
    entries: list[str]
    calls: dict[str, str]
    shard: int = 0  # the shard it was claimed in
    priority: int = 0
    seq_base: int = 0  # calls of earlier runs (continue-as-new): this run's first call is seq_base + 1
    trace: str = ""  # the W3C traceparent stored with the workflow (tracing on), which its step spans continue

    @property
    def item(self) -> WorkItem:
        return WorkItem("w", self.workflow_id)


@dataclass(frozen=True, slots=True)
class TaskClaim:
    """A claimed task attempt."""

    suspect: bool
    workflow_id: str
    seq: int
    lease: str
    call: TaskCall
    shard: int = 0  # the shard it was claimed in: its workflow's, or its limit's (a limited task lives there)

    @property
    def item(self) -> WorkItem:
        return WorkItem("l" if self.call.limited else "t", self.workflow_id, self.seq)


Claim = StepClaim | TaskClaim


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def decode_claims(raw: Sequence[Any], shard: int = 0) -> list[Claim]:
    """Claims as ``claim.lua`` and every hand-off return them (see ``claim_step``/``claim_task`` in lib.lua),
    from the script that ran in ``shard``."""
    claims: list[Claim] = []
    for entry in raw:
        kind, suspect = str(entry[0]), bool(int(entry[1]))
        if kind == "w":
            fields = entry[2:13]
            workflow_id, lease, name, version, input_text, start, committed, entries, calls, priority, base = fields
            claims.append(
                StepClaim(
                    suspect,
                    str(workflow_id),
                    str(lease),
                    str(name),
                    str(version),
                    str(input_text),
                    int(start),
                    int(committed),
                    [str(e) for e in entries],
                    _pairs(calls),
                    shard,
                    int(priority),
                    int(base),
                    str(entry[13]) if len(entry) > 13 else "",
                )
            )
        else:
            _, _, workflow_id, seq, lease, fields = entry
            claims.append(
                TaskClaim(suspect, str(workflow_id), int(seq), str(lease), TaskCall.from_fields(_pairs(fields)), shard)
            )
    return claims


# -- replies of the other scripts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FollowingStep:
    """A workflow's next step, run by the dispatcher right after one of its tasks on its cached copy of the run,
    fed that task's result: it commits with the result (``commit_task.lua``) when the copy was current."""

    based_on: int  # inbox entries consumed, the task's result included
    document: StepDocument
    retention_ms: int


@dataclass(frozen=True, slots=True)
class CommitReply:
    """``commit_step``/``commit_task``: what happened, and the work the commit handed to this dispatcher.

    ``step_committed``: a task commit also committed the workflow step that follows it (``commit_task.lua``);
    ``status`` is then that step's ('ok', or 'finished' when it ended the workflow).
    """

    status: Literal["ok", "finished", "retrying", "dead", "stale", "gone"]
    claims: list[Claim]
    dead_letter: str | None = None
    step_committed: bool = False

    @classmethod
    def decode(cls, raw: Sequence[Any], shard: int = 0) -> CommitReply:
        status = str(raw[0])
        claims = decode_claims(raw[1], shard) if len(raw) > 1 else []
        entry = (str(raw[2]) or None) if len(raw) > 2 else None
        step_committed = len(raw) > 3 and str(raw[3]) == "step"
        return cls(status, claims, entry, step_committed)  # type: ignore[arg-type]  # the script's words only


@dataclass(frozen=True, slots=True)
class LostAttempt:
    """A task attempt that died with its dispatcher, waiting for the reaper's retry decision."""

    item: WorkItem
    lease: str
    attempts: int  # attempts that ended, this one included
    max_attempts: int
    backoff_ms: int
    worker: str


@dataclass(frozen=True, slots=True)
class ReapReply:
    workers: int
    steps: int
    tasks: int
    failed: int
    halted: int
    lost: list[LostAttempt]

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> ReapReply:
        lost = [
            LostAttempt(WorkItem.decode(str(e[0])), str(e[1]), int(e[2]), int(e[3]), int(e[4]), str(e[5]))
            for e in raw[5]
        ]
        return cls(int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]), lost)


@dataclass(frozen=True, slots=True)
class BusApplyReply:
    delivered: int
    buffered: int
    dropped: int
    published: int
    cancelled: int
    forwarded: list[str]

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> BusApplyReply:
        return cls(int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]), [str(m) for m in raw[5]])


def forwarded_shard(message: str) -> int:
    """The shard a cross-shard operation (carried by the signal bus) is for."""
    return int(loads(message)["shard"])


@dataclass(frozen=True, slots=True)
class QueueGauge:
    queue: str
    depth: int
    oldest_age_ms: int  # -1 when empty


@dataclass(frozen=True, slots=True)
class GaugesReply:
    timers: int
    dlq: int
    live_dispatchers: int
    queues: list[QueueGauge]
    totals: dict[str, int]  # running totals: ``halted``, ``throttled\t<task>\t<reason>``
    held: dict[str, int]  # calls held back by limits, per task

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> GaugesReply:
        queues = [QueueGauge(str(q[0]), int(q[1]), int(q[2])) for q in raw[3]]
        totals = {name: int(value) for name, value in _pairs(raw[4]).items()}
        held = {name: int(value) for name, value in _pairs(raw[5]).items()}
        return cls(int(raw[0]), int(raw[1]), int(raw[2]), queues, totals, held)


@dataclass(frozen=True, slots=True)
class FireReply:
    next_in_ms: int  # -1: no timer left
    lags_ms: list[int]

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> FireReply:
        return cls(int(raw[0]), [int(x) for x in raw[1:]])


@dataclass(frozen=True, slots=True)
class StartReply:
    outcome: Literal["created", "exists", "conflict"]
    detail: str = ""  # the run's status (created or existing), or the other workflow's name

    @classmethod
    def decode(cls, raw: Sequence[Any]) -> StartReply:
        return cls(str(raw[0]), str(raw[1]) if len(raw) > 1 else "")  # type: ignore[arg-type]  # the script's words


@dataclass(frozen=True, slots=True)
class Verdict:
    """A management script's answer: a word (``ok``, ``missing``, ...) and a detail for the message."""

    word: str
    detail: str = ""

    @classmethod
    def decode(cls, raw: Any) -> Verdict:
        if isinstance(raw, list):
            return cls(str(raw[0]), str(raw[1]) if len(raw) > 1 else "")
        return cls(str(raw))
