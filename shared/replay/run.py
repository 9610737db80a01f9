"""One workflow instance being replayed and advanced: history in, new durable calls and outcome out.

A run is fed the workflow's inbox (results of its durable calls, in arrival order) one entry at a time;
after each, the workflow code runs until it is blocked again. Calls it makes get sequence numbers; a call
whose number is already recorded must match the record (kind and name), else the run is non-deterministic.
Calls beyond the record are this step's new commands. Because results are always fed one by one, in the
recorded order, the same code over the same inbox makes the same calls, whether the run is replayed from
scratch or kept in a dispatcher's memory between steps. Nothing here touches Redis or a clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bdurable.codec import annotation_mismatch, dumps, loads, same_json, to_json_value
from bdurable.current import running
from bdurable.errors import (
    ChildWorkflowError,
    DurableError,
    EventTimeoutError,
    NonDeterminismError,
    PayloadTooLargeError,
    TaskFailedError,
    WorkflowCancelledError,
)
from bdurable.model import Status
from bdurable.replay.context import Context
from bdurable.replay.loop import StepLoop
from bdurable.replay.signals import ContinueAsNew
from bdurable.wire import (
    CallRecord,
    CancelRequest,
    Delivery,
    ErrorRecord,
    NewCall,
    Outcome,
    StepDocument,
    ValueCommand,
    decode_inbox,
)
from bdurable.workflow import Workflow

__all__ = ["Evicted", "PendingCall", "WorkflowRun", "error_from_record"]

# Kinds of durable call that complete immediately (nothing to wait for).
IMMEDIATE_KINDS = frozenset({"value", "signal"})

# Makes a call's command once its sequence number and record are known.
CommandFactory = Callable[[int, CallRecord], NewCall]


class Evicted(BaseException):
    """Raised into workflow code that is being dropped from memory; user code must not catch it."""


class CodeExit(Exception):
    """The ``SystemExit`` or ``KeyboardInterrupt`` that workflow code raised, carried out of its task as the
    workflow's failure: asyncio lets those two out of the loop running the task, which would stop the
    dispatcher (and each one that claimed the step after it) instead of failing the one workflow."""

    def __init__(self, raised: BaseException) -> None:
        super().__init__(repr(raised))
        self.raised = raised


@dataclass(slots=True)
class PendingCall:
    future: asyncio.Future[Any]
    kind: str
    name: str
    description: str


def error_from_record(record: ErrorRecord) -> BaseException:
    """Rebuild the exception a failed durable call raises in the workflow from its record."""
    extra = record.extra
    if record.type == "TaskFailedError":
        return TaskFailedError(
            str(extra.get("task_name")), int(extra.get("attempts", 0)), str(extra.get("error_type")), record.message
        )
    if record.type == "ChildWorkflowError":
        return ChildWorkflowError(str(extra.get("workflow_id")), str(extra.get("error_type")), record.message)
    if record.type == "EventTimeoutError":
        return EventTimeoutError(record.message)
    if record.type == "WorkflowCancelledError":
        reason = extra.get("reason")
        return WorkflowCancelledError(None if reason is None else str(reason))
    return DurableError(f"{record.type}: {record.message}")


RUN_OVERHEAD_BYTES = 5 * 1024


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class WorkflowRun:
    """The in-memory state of one workflow instance between and during steps."""

    def __init__(
        self,
        *,
        loop: StepLoop,
        definition: Workflow[Any, Any],
        workflow_id: str,
        input_value: Any,
        recorded: dict[int, CallRecord],
        committed_len: int,
        max_payload: int,
        shard_of: Callable[[str], int] = lambda workflow_id: 0,
        recorded_arguments: Mapping[int, str] | None = None,
        seq_base: int = 0,
        clock: Callable[[], datetime] = _wall_clock,
    ) -> None:
        self.loop = loop
        self.definition = definition
        self.workflow_id = workflow_id
        self.input_value = input_value
        self.recorded = recorded
        # Calls of earlier runs (continue-as-new) come before this run's: its first call is seq_base + 1.
        self.seq_base = seq_base
        self.last_recorded = max(recorded, default=seq_base)  # kept up to date: no scan of the history per step
        self.committed_len = committed_len
        self.max_payload = max_payload
        self.shard_of = shard_of
        # When given (the offline replayer), a recorded task, child or signal call must be made with the same
        # arguments (a signal's: its payload).
        self.recorded_arguments = recorded_arguments
        self.clock = clock  # what ctx.now() records on a first run: the wall clock, or a test's clock
        self.context = Context(self)
        self.seq = seq_base
        self.completed = 0
        self.delivered = 0
        self.pending: dict[int, PendingCall] = {}
        self.new_calls: list[NewCall] = []
        self.outcome: Outcome | None = None
        self.fatal: NonDeterminismError | None = None
        self.cancel_reason: str | None = None
        self.cancelled_seqs: set[int] = set()
        self.newly_cancelled: list[int] = []
        self.replaying = committed_len >= 0
        self.evicted = False
        self._task: asyncio.Task[Any] | None = None
        # What this run is counted for in a dispatcher's cache of runs (BDURABLE_RUN_CACHE_BYTES): the payload
        # bytes it holds (input, results delivered, calls recorded) plus what a run takes in memory whatever its
        # payloads (its coroutine, futures and records: about 5 KiB measured, bench/bench_memory.py).
        self.footprint = RUN_OVERHEAD_BYTES

    # -- driving -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin the workflow function and run it until it first blocks."""
        self._task = self.loop.create_task(self._main(), context=running(self))
        self.loop.run_until_quiet()
        self._check_finished()

    def feed(self, entries: list[str]) -> None:
        """Deliver inbox entries one at a time, letting the workflow run after each."""
        for raw in entries:
            if self.outcome is not None:
                self.delivered += 1
                continue
            self.replaying = self.delivered < self.committed_len
            self.footprint += len(raw)
            self._deliver(decode_inbox(raw))
            self.delivered += 1
            self.loop.run_until_quiet()
            self._check_finished()
        self.replaying = False

    async def _main(self) -> Any:
        value = self.definition.convert_input(self.input_value)
        try:
            return await self.definition.fn(self.context, value)
        except (SystemExit, KeyboardInterrupt) as exc:
            raise CodeExit(exc) from exc

    def _deliver(self, entry: Delivery | CancelRequest) -> None:
        if isinstance(entry, CancelRequest):
            self._cancel(entry.reason)
            return
        call = self.pending.pop(entry.seq, None)
        if call is None:
            if entry.seq in self.cancelled_seqs:
                return  # a late result of a call the cancellation already abandoned
            self._nondeterminism(
                f"the history holds a result for call #{entry.seq}, which this code never made",
                seq=entry.seq,
                recorded=self._recorded_summary(entry.seq),
            )
            return
        self.completed += 1
        if entry.ok:
            call.future.set_result(entry.value)
        else:
            call.future.set_exception(error_from_record(entry.error or ErrorRecord("Error", "")))

    def _cancel(self, reason: str | None) -> None:
        self.cancel_reason = reason if reason is not None else ""
        for seq, call in list(self.pending.items()):
            self.cancelled_seqs.add(seq)
            self.newly_cancelled.append(seq)
            call.future.set_exception(WorkflowCancelledError(reason))
        self.pending.clear()

    # -- durable calls (from Context) -------------------------------------------------------------------

    def call_task(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        """What ``await my_task(...)`` does inside this workflow (see :mod:`bdurable.current`)."""
        return self.context.call_task(task, args, kwargs)

    def issue(
        self,
        kind: str,
        name: str,
        *,
        command: CommandFactory | None = None,
        record: Mapping[str, Any] | None = None,
        description: str = "",
        value: Any = None,
        arguments: str | None = None,
    ) -> Any:
        """Make durable call number ``seq``: returns a value (immediate kinds) or a future to await.

        ``command`` makes the call's command for this step's commit when the call is new; ``record`` adds
        fields to its call record; ``value`` is the result of an immediate call made for the first time;
        ``arguments`` is a task's or child's encoded arguments, or a signal's payload (compared with the recorded
        ones when known).
        """
        if self.evicted:
            raise Evicted
        if self.fatal is not None:
            raise self.fatal
        self.seq += 1
        seq = self.seq
        recorded = self.recorded.get(seq)
        if recorded is not None:
            # A sleep's duration may change between deploys (as in Temporal); every other call must match.
            if recorded.kind != kind or (kind != "sleep" and recorded.name != name):
                self._nondeterminism(
                    f"call #{seq} is {kind} {name!r} but the history recorded {recorded.kind} {recorded.name!r} there",
                    seq=seq,
                    recorded=self._recorded_summary(seq),
                    new=_call_summary(kind, name, arguments),
                )
            recorded_arguments = (self.recorded_arguments or {}).get(seq)
            if (
                arguments is not None
                and recorded_arguments is not None
                and not same_json(recorded_arguments, arguments)  # written by an older encoder: same value?
            ):
                self._nondeterminism(
                    f"call #{seq} ({kind} {name!r}) is made with other arguments than recorded: "
                    f"recorded {_shorten(recorded_arguments)}, now {_shorten(arguments)}",
                    seq=seq,
                    recorded=self._recorded_summary(seq),
                    new=_call_summary(kind, name, arguments),
                )
            if kind in IMMEDIATE_KINDS:
                return recorded.value
        else:
            if self.replaying:
                self._nondeterminism(
                    f"call #{seq} ({kind} {name!r}) is not in the recorded history",
                    seq=seq,
                    new=_call_summary(kind, name, arguments),
                )
            extra = dict(record or {})
            if kind == "value":
                extra["v"] = value
            call_record = CallRecord(kind, name, extra)
            self.footprint += len(arguments or "") + 64  # the record itself: a few dozen bytes
            self.recorded[seq] = call_record
            self.last_recorded = max(self.last_recorded, seq)
            factory = command if command is not None else _value_command
            self.new_calls.append(factory(seq, call_record))
            if kind in IMMEDIATE_KINDS:
                if kind == "signal":
                    self.completed += 1
                return value
        future: asyncio.Future[Any] = self.loop.create_future()
        self.pending[seq] = PendingCall(future, kind, name, description or f"{kind} {name}")
        return future

    def _nondeterminism(
        self,
        message: str,
        *,
        seq: int | None = None,
        recorded: dict[str, Any] | None = None,
        new: dict[str, Any] | None = None,
    ) -> None:
        """Fail the run: ``seq``, ``recorded`` and ``new`` say which call differs, and how (see the error)."""
        self.fatal = NonDeterminismError(
            f"workflow {self.definition.name}@{self.definition.version} ({self.workflow_id}) is "
            f"non-deterministic: {message}",
            seq=seq,
            recorded=recorded,
            new=new,
        )
        raise self.fatal

    def _recorded_summary(self, seq: int) -> dict[str, Any] | None:
        """The recorded call ``seq`` as a :class:`NonDeterminismError` describes it (``None``: not recorded)."""
        record = self.recorded.get(seq)
        if record is None:
            return None
        return _call_summary(record.kind, record.name, (self.recorded_arguments or {}).get(seq))

    # -- results ----------------------------------------------------------------------------------------

    def _check_finished(self) -> None:
        task = self._task
        if self.outcome is not None or task is None:
            return
        if self.fatal is not None:
            self.outcome = _failure(self.fatal)
            self.close()
            return
        if not task.done():
            return
        if task.cancelled():
            self.outcome = _failure(RuntimeError("the workflow's task was cancelled"))
            return
        exc = task.exception()
        if isinstance(exc, ContinueAsNew):
            self.outcome = Outcome("CONTINUED", exc.input, None, next_seq=self.seq)
        elif exc is None:
            self.outcome = self._success(task.result())
        elif self.cancel_reason is not None and isinstance(exc, WorkflowCancelledError):
            self.outcome = Outcome(Status.CANCELLED, "null", _cancel_record(exc, self.cancel_reason or None))
        else:
            self.outcome = _failure(exc.raised if isinstance(exc, CodeExit) else exc)

    def _success(self, value: Any) -> Outcome:
        status = Status.CANCELLED if self.cancel_reason is not None else Status.COMPLETED
        error = None
        if status == Status.CANCELLED:
            reason = self.cancel_reason or None
            error = _cancel_record(WorkflowCancelledError(reason), reason)
        try:
            json_value = to_json_value(value)
            output = dumps(json_value)
        except (TypeError, ValueError) as exc:
            return _failure(TypeError(f"the workflow's output is not JSON-serialisable: {exc}"))
        if status == Status.COMPLETED:  # a wrong output fails where it is returned, not in each of its readers
            definition = self.definition
            what = f"the output of {definition.name}"
            mismatch = annotation_mismatch(json_value, definition.output_annotation, what=what)
            if mismatch is not None:
                return _failure(TypeError(mismatch))
        if len(output.encode()) > self.max_payload:
            return _failure(
                PayloadTooLargeError(
                    f"the workflow's output is {len(output.encode())} bytes, over the limit of "
                    f"{self.max_payload} bytes (BDURABLE_MAX_PAYLOAD)"
                )
            )
        return Outcome(status, output, error)

    def take_step(self) -> StepDocument:
        """What this step commits: new calls, the status, and the outcome if the workflow ended."""
        if self.fatal is None and self.recorded:
            last_recorded = self.last_recorded
            if last_recorded > self.seq:  # the code ended or blocked before making its recorded calls
                try:
                    missing = self.seq + 1  # the first recorded call this code did not make
                    self._nondeterminism(
                        f"the history records {last_recorded - self.seq_base} calls but the code made only "
                        f"{self.seq - self.seq_base}",
                        seq=missing,
                        recorded=self._recorded_summary(missing),
                    )
                except NonDeterminismError:
                    self.outcome = None  # the failure replaces whatever the different code reached
                    self._check_finished()
        if self.outcome is None and not self.pending:
            self.outcome = _failure(
                RuntimeError(
                    "the workflow is blocked on something that is not a durable call "
                    "(await only tasks, ctx.sleep, ctx.execute, ctx.wait_for_event)"
                )
            )
            self.close()
        calls, self.new_calls = self.new_calls, []
        cancelled, self.newly_cancelled = self.newly_cancelled, []
        if self.outcome is not None:
            abandon = sorted(self.pending)
            return StepDocument(calls, self.outcome.status, "", self.outcome, abandon, cancelled)
        status, waiting_on = self._waiting()
        return StepDocument(calls, status, waiting_on, None, cancelled=cancelled)

    def _waiting(self) -> tuple[str, str]:
        calls = list(self.pending.values())
        kinds = {c.kind for c in calls}
        if kinds & {"task", "child"}:
            status = Status.RUNNING
            shown = [c for c in calls if c.kind in ("task", "child")]
        elif "event" in kinds:
            status = Status.AWAITING_EVENT
            shown = [c for c in calls if c.kind == "event"]
        else:
            status = Status.SLEEPING
            shown = calls
        text = ", ".join(c.description for c in shown[:3])
        if len(shown) > 3:
            text += f" and {len(shown) - 3} more"
        return status, text

    def close(self) -> None:
        """Drop the workflow's coroutine (eviction, or after the end): user code sees ``Evicted``."""
        self.evicted = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            self.loop.run_until_quiet()


def _call_summary(kind: str, name: str, arguments: str | None) -> dict[str, Any]:
    """A durable call as :class:`NonDeterminismError` describes it: kind, name, and arguments when known."""
    summary: dict[str, Any] = {"kind": kind, "name": name}
    if arguments is not None:
        try:
            summary["arguments"] = loads(arguments)
        except ValueError:
            summary["arguments"] = arguments
    return summary


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _value_command(seq: int, record: CallRecord) -> NewCall:
    return ValueCommand(seq, record.name, record)


def _cancel_record(exc: BaseException, reason: str | None) -> ErrorRecord:
    record = ErrorRecord.from_exception(exc)
    return ErrorRecord(record.type, record.message, record.traceback, {"reason": reason})


def _failure(exc: BaseException) -> Outcome:
    return Outcome(Status.FAILED, "null", ErrorRecord.from_exception(exc))
