"""``Replayer``: check today's workflow code against recorded histories, offline.

A history (``bdurable export ID``, see :mod:`bdurable.history`) holds every durable call a workflow made and
every result it received. Replaying it runs today's code over those results exactly as a dispatcher would
after a deploy, through the same replay core (:class:`bdurable.replay.run.WorkflowRun`): no Redis, no clock,
no task runs. The code must make the same calls, in the same order, with the same arguments (tasks, child
workflows, signal payloads), and, when the history ended, end the same way (status, output, error). The first
difference is reported as a :class:`NonDeterminismError` whose ``seq``, ``recorded`` and ``new`` say where and
how; it is what the workflow's in-flight runs would fail with after the deploy. A sleep's duration may change
(as in production), so may an event wait's timeout or key (the engine does not compare them either).

    replayer = Replayer(apps=["shop.workflows"])
    await replayer.replay("histories/order-42.json")         # raises NonDeterminismError on a difference
    results = await replayer.replay_all(paths)                # one ReplayResult per history, never raises
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from bdurable.codec import loads
from bdurable.config import Settings
from bdurable.durations import parse_size
from bdurable.errors import DurableError, InvalidInputError, NonDeterminismError, UnknownWorkflowError
from bdurable.history import History
from bdurable.registry import Registry
from bdurable.replay.loop import StepLoop
from bdurable.replay.run import WorkflowRun
from bdurable.wire import Outcome, StepDocument
from bdurable.workflow import Workflow

__all__ = ["HistorySource", "ReplayResult", "Replayer", "describe_call"]

# A history, its document as JSON data, or the path of its file.
HistorySource = History | Mapping[str, Any] | str | os.PathLike[str]

# Errors the engine, not the workflow's code, ended a run with. After these two the history lacks the calls
# of the step that failed (it never committed), so no code can replay it identically.
UNREPLAYABLE = frozenset({"NonDeterminismError", "CorruptHistoryError"})
# After this one the calls are whole but the ending is not the code's: they are compared, the ending is not.
NOT_THE_CODES_ENDING = frozenset({"PoisonStepError"})


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """How one history replayed: identically (``ok``), with a ``divergence``, or not at all (``problem``)."""

    source: str  # the file, or the workflow for a history given as an object
    workflow_id: str | None = None
    name: str | None = None
    version: str | None = None
    run: int | None = None
    calls: int = 0  # durable calls the history records
    recorded_status: str | None = None
    status: str | None = None  # where the replay got to: how it ended, or the status it waits in
    divergence: NonDeterminismError | None = None
    problem: DurableError | None = None  # unreadable, malformed, unknown workflow: nothing was compared

    @property
    def ok(self) -> bool:
        return self.divergence is None and self.problem is None

    @property
    def message(self) -> str:
        """One line: ``run.json: call #3: recorded task 'a'(1), now task 'b'(1)``, or what was replayed."""
        if self.problem is not None:
            return str(self.problem)
        if self.divergence is not None:
            return str(self.divergence)
        return f"{self.source}: identical ({_count(self.calls, 'call')}, {self.status})"

    def to_json(self) -> dict[str, Any]:
        divergence = None
        if self.divergence is not None:
            d = self.divergence
            divergence = {"seq": d.seq, "recorded": d.recorded, "new": d.new, "message": str(d)}
        return {
            "source": self.source,
            "ok": self.ok,
            "workflow_id": self.workflow_id,
            "name": self.name,
            "version": self.version,
            "run": self.run,
            "calls": self.calls,
            "recorded_status": self.recorded_status,
            "status": self.status,
            "divergence": divergence,
            "error": None if self.problem is None else str(self.problem),
        }


class Replayer:
    """Replays recorded histories against the workflows of ``apps`` (modules, or their import names)."""

    def __init__(
        self,
        apps: Iterable[str | ModuleType] = (),
        *,
        workflows: Iterable[Workflow[Any, Any]] = (),
        max_payload: int | str | None = None,
    ) -> None:
        self.registry = Registry.from_modules(apps)
        for definition in workflows:
            self.registry.add(definition)
        self.max_payload = Settings().max_payload if max_payload is None else parse_size(max_payload)

    async def replay(self, history: HistorySource) -> ReplayResult:
        """Replay one history; return what was replayed when the code replays it identically.

        Raises :class:`NonDeterminismError` at the first difference, ``InvalidInputError`` for a malformed or
        unreadable history, ``UnknownWorkflowError`` when no app defines its workflow's name and version.
        """
        loaded, source = _load(history)
        result = self._replay(loaded, source)
        if result.divergence is not None:
            raise result.divergence
        return result

    async def replay_all(self, histories: Iterable[HistorySource]) -> list[ReplayResult]:
        """Replay each history; one result per history, in order. Nothing is raised for a history that
        diverges or cannot be read: its result says so (``divergence``, ``problem``)."""
        results = []
        for history in histories:
            try:
                loaded, source = _load(history)
            except InvalidInputError as exc:
                results.append(ReplayResult(_source_of(history, None), problem=exc))
                continue
            try:
                results.append(self._replay(loaded, source))
            except (InvalidInputError, UnknownWorkflowError) as exc:
                results.append(_identity(loaded, source, problem=exc))
        return results

    # -- one replay ------------------------------------------------------------------------------------

    def _replay(self, history: History, source: str) -> ReplayResult:
        definition = self.registry.workflow(history.name, history.version)
        if definition is None:
            raise UnknownWorkflowError(f"{source}: {self._unknown(history)}")
        ending = _error_type(history.error) if history.finished else None
        if ending in UNREPLAYABLE:
            raise InvalidInputError(
                f"{source}: the engine failed this workflow with {ending}, so its history lacks the calls of "
                "the step that failed: it cannot be replayed (keep histories of workflows that ended by their code)"
            )
        loop = StepLoop()
        run: WorkflowRun | None = None
        try:
            consumed = history.consumed
            run = WorkflowRun(
                loop=loop,
                definition=definition,
                workflow_id=history.workflow_id,
                input_value=history.input,
                recorded=history.call_records(),
                committed_len=-1 if consumed is None else consumed,  # everything consumed is replayed
                max_payload=self.max_payload,
                recorded_arguments=history.recorded_arguments(),
                seq_base=history.seq_base,
            )
            try:
                run.start()
                run.feed(history.inbox_entries()[: consumed or 0])
            except NonDeterminismError:
                pass  # raised outside the workflow's code (a result for a call it never made): run.fatal has it
            if run.fatal is not None:
                return _identity(history, source, divergence=_call_divergence(run.fatal, source, run, history))
            doing = _doing(run)  # before take_step, which replaces an ending reached too early with the error
            document = run.take_step()
            fatal = _fatal_of(run)  # take_step's own check: fewer calls than recorded
            if fatal is not None:
                return _identity(history, source, divergence=_call_divergence(fatal, source, doing, history))
            compare = consumed is not None and ending not in NOT_THE_CODES_ENDING
            divergence = _ending_divergence(history, document, source) if compare else None
            return _identity(history, source, status=_status(document), divergence=divergence)
        except NonDeterminismError:
            raise
        except Exception as exc:  # the engine could not replay it at all: the history is not what it wrote
            raise InvalidInputError(f"{source}: cannot be replayed: {type(exc).__name__}: {exc}") from exc
        finally:
            if run is not None:
                run.close()
            loop.close()

    def _unknown(self, history: History) -> str:
        known = sorted(f"{name}@{version}" for name, version in self.registry.workflows)
        same_name = [k for k in known if k.rsplit("@", 1)[0] == history.name]
        shown = ", ".join(same_name or known) or "none"
        return (
            f"no workflow {history.name}@{history.version} in the apps (they define {shown}); a history "
            "replays against the code of its own workflow version"
        )


# -- reading the input ---------------------------------------------------------------------------------------


def _load(history: HistorySource) -> tuple[History, str]:
    if isinstance(history, History):
        return history, _source_of(history, history)
    if isinstance(history, Mapping):
        loaded = History.from_json(dict(history))
        return loaded, _source_of(history, loaded)
    return History.load(history), os.fspath(history)


def _source_of(history: HistorySource, loaded: History | None) -> str:
    if isinstance(history, str | os.PathLike):
        return os.fspath(history)
    return f"workflow {loaded.workflow_id!r}" if loaded is not None else "history"


def _identity(history: History, source: str, **rest: Any) -> ReplayResult:
    return ReplayResult(
        source=source,
        workflow_id=history.workflow_id,
        name=history.name,
        version=history.version,
        run=history.run,
        calls=len(history.calls),
        recorded_status=history.status,
        **rest,
    )


# -- what differs --------------------------------------------------------------------------------------------


def _call_divergence(
    fatal: NonDeterminismError, source: str, doing: str | WorkflowRun, history: History
) -> NonDeterminismError:
    """The run's own error, restated as one line naming the call, both sides, and the file. ``doing`` says
    what the code does instead of a recorded call it no longer makes (or is the run, to tell from it)."""
    if isinstance(doing, WorkflowRun):
        doing = _doing(doing)
    recorded, new = fatal.recorded, fatal.new
    calls = _count(len(history.calls), "call")
    shown_recorded = describe_call(recorded) if recorded else f"nothing (the history has {calls})"
    shown_new = describe_call(new) if new else f"nothing ({doing})"
    error = NonDeterminismError(
        f"{source}: call #{fatal.seq}: recorded {shown_recorded}, now {shown_new}",
        seq=fatal.seq,
        recorded=recorded,
        new=new,
    )
    error.__cause__ = fatal
    return error


def _ending_divergence(history: History, document: StepDocument, source: str) -> NonDeterminismError | None:
    """Every call matched: does the code end where and as the history did?"""
    recorded = _ending_of_history(history)
    new = _ending_of_step(document)
    if history.finished and document.outcome is not None:
        same_error = _error_summary(history.error) == new["error"]
        if history.status == new["status"] and history.output == new["output"] and same_error:
            return None
    elif not history.finished and document.outcome is None:
        return None  # the history was still running, and so is the replay
    return NonDeterminismError(
        f"{source}: at the end: recorded {_describe_ending(recorded)}, now {_describe_ending(new)}",
        recorded=recorded,
        new=new,
    )


def _ending_of_history(history: History) -> dict[str, Any]:
    if not history.finished:
        return {"status": history.status}
    return {"status": history.status, "output": history.output, "error": _error_summary(history.error)}


def _ending_of_step(document: StepDocument) -> dict[str, Any]:
    outcome: Outcome | None = document.outcome
    if outcome is None:
        return {"status": document.status, "waiting_on": document.waiting_on}
    error = None if outcome.error is None else {"type": outcome.error.type, "message": outcome.error.message}
    return {"status": outcome.status, "output": loads(outcome.output), "error": error}


def _fatal_of(run: WorkflowRun) -> NonDeterminismError | None:
    return run.fatal


def _status(document: StepDocument) -> str:
    return document.outcome.status if document.outcome is not None else document.status


def _error_type(error: Mapping[str, Any] | None) -> str | None:
    return None if error is None else str(error.get("type"))


def _error_summary(error: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An error record without its traceback (line numbers move with any edit: not a difference)."""
    return None if error is None else {"type": error.get("type"), "message": error.get("message")}


def _doing(run: WorkflowRun) -> str:
    """What the code is doing instead of a recorded call it did not make."""
    if run.outcome is not None and run.fatal is None:
        error = run.outcome.error
        reason = f": {error.type}: {_shorten(error.message)}" if error is not None and error.message else ""
        return f"the workflow ends there, {run.outcome.status}{reason}"
    waiting = [call.description for call in run.pending.values()]
    if not waiting:
        return "the code never makes it"
    more = f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
    return f"the code waits on {', '.join(waiting[:3])}{more}"


# -- showing calls and endings -------------------------------------------------------------------------------


def describe_call(call: Mapping[str, Any]) -> str:
    """``task 'shop.charge'("o-1", 40)``: a call as a divergence shows it (arguments when known)."""
    text = f"{call.get('kind')} {call.get('name')!r}"
    if "arguments" not in call:
        return text
    arguments = call["arguments"]
    if call.get("kind") == "task" and isinstance(arguments, dict) and set(arguments) <= {"args", "kwargs"}:
        parts = [_json(value) for value in arguments.get("args") or []]
        parts += [f"{key}={_json(value)}" for key, value in (arguments.get("kwargs") or {}).items()]
        return f"{text}({_shorten(', '.join(parts))})"
    return f"{text}({_shorten(_json(arguments))})"


def _describe_ending(ending: Mapping[str, Any]) -> str:
    status = ending.get("status")
    if "waiting_on" in ending:
        return f"still {status}" + (f", waiting on {ending['waiting_on']}" if ending["waiting_on"] else "")
    if "output" not in ending:
        return f"still {status} (not finished)"
    error = ending.get("error")
    if error is not None:
        return f"{status} with {error.get('type')}: {_shorten(str(error.get('message')))}"
    return f"{status} with output {_shorten(_json(ending.get('output')))}"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
