"""``Context``: what workflow code uses for durable time, children, events, signals and randomness."""

from __future__ import annotations

import random as random_module
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import structlog

from bdurable.codec import encode_payload, from_json_value
from bdurable.durations import parse_duration
from bdurable.limits import limit_id
from bdurable.replay.signals import ContinueAsNew
from bdurable.wire import (
    ChildCommand,
    EventCommand,
    LimitSpec,
    SignalCommand,
    SleepCommand,
    TaskCommand,
    task_origin,
)

if TYPE_CHECKING:
    from bdurable.replay.run import WorkflowRun
    from bdurable.task import Task
    from bdurable.workflow import Workflow

__all__ = ["Context"]

O = TypeVar("O")  # noqa: E741 - a workflow's output type
R = TypeVar("R")


class _ReplaySafeLogger:
    """A structlog logger that says nothing while the workflow replays code that already ran."""

    def __init__(self, run: WorkflowRun) -> None:
        self._run = run

    def _bound(self) -> Any:
        run = self._run
        return structlog.get_logger("bdurable.workflow").bind(
            workflow_id=run.workflow_id,
            name=run.definition.name,
            version=run.definition.version,
            step=run.completed,
        )

    def __getattr__(self, method: str) -> Any:
        if self._run.replaying:
            return _silent
        return getattr(self._bound(), method)

    def __call__(self, event: str, **fields: Any) -> None:
        """``ctx.log("message", key=value)``: log at info (the seed's form); ``ctx.log.warning(...)`` etc. too."""
        if not self._run.replaying:
            self._bound().info(event, **fields)


def _silent(*args: Any, **kwargs: Any) -> None:
    return None


class Context:
    """Handed to every workflow as its first argument; every ``await`` on it is a durable step."""

    def __init__(self, run: WorkflowRun) -> None:
        self._run = run
        self.log: Any = _ReplaySafeLogger(run)

    @property
    def workflow_id(self) -> str:
        return self._run.workflow_id

    @property
    def name(self) -> str:
        return self._run.definition.name

    @property
    def version(self) -> str:
        return self._run.definition.version

    @property
    def is_replaying(self) -> bool:
        """True while the workflow re-runs code whose effects are already recorded."""
        return self._run.replaying

    # -- durable calls ----------------------------------------------------------------------------------

    async def sleep(self, duration: str | float | timedelta) -> None:
        """Sleep durably: ``30``, ``timedelta(hours=1)``, ``"500ms"``, ``"1h30m"``, ``"7 days"``."""
        seconds = parse_duration(duration)
        label = duration if isinstance(duration, str) else f"{seconds:g}s"
        due = self._run.clock() + timedelta(seconds=seconds)
        delay_ms = round(seconds * 1000)
        await self._run.issue(
            "sleep",
            str(label),
            command=lambda seq, record: SleepCommand(seq, record.name, record, delay_ms=delay_ms),
            description=f"timer {label} (due about {due.isoformat(timespec='seconds')})",
        )

    async def sleep_until(self, when: datetime) -> None:
        """Sleep durably until an aware ``datetime`` (by the Redis server's clock)."""
        if when.tzinfo is None:
            raise ValueError("sleep_until needs an aware datetime (with a timezone)")
        label = when.astimezone(UTC).isoformat()
        due_ms = round(when.timestamp() * 1000)
        await self._run.issue(
            "sleep",
            label,
            command=lambda seq, record: SleepCommand(seq, record.name, record, due_ms=due_ms),
            description=f"timer until {label}",
        )

    async def execute(self, child: Workflow[Any, O], input: Any, *, workflow_id: str | None = None) -> O:
        """Run a child workflow and return its output; its failure raises ``ChildWorkflowError``."""
        run = self._run
        input_json = encode_payload(
            child.validate_input(input, strict=False),
            what=f"input of child workflow {child.name}",
            max_bytes=run.max_payload,
            json_ready=True,
        )
        child_id = workflow_id or f"{run.workflow_id}:{run.seq + 1}"
        shard = run.shard_of(child_id)
        result = await run.issue(
            "child",
            child.name,
            command=lambda seq, record: ChildCommand(
                seq, record.name, record, child_id, shard, child.version, child.queue, input_json
            ),
            record={"id": child_id, "shard": shard},
            description=f"child workflow {child.name} ({child_id})",
            arguments=input_json,
        )
        return child.convert_output(result)  # type: ignore[no-any-return]

    def call_task(self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Coroutine[Any, Any, R]:
        """Schedule a task call durably (what ``await my_task(...)`` does inside a workflow)."""
        return self._call_task(task, args, kwargs)

    async def _call_task(self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        run = self._run
        arguments = encode_payload(
            task.bind_arguments(args, kwargs), what=f"arguments of task {task.name}", max_bytes=run.max_payload
        )
        limit, record, description = self._task_limit(task, args, kwargs), None, f"task {task.name}"
        origin = task_origin(run.definition.name, run.definition.version, run.completed)
        if limit is not None:
            description += f" (limited{task.limit.describe(task.limit.key_of(*args, **kwargs))})"
            if limit.shard != run.shard_of(run.workflow_id):
                record = {"home": limit.shard}  # the task lives with its limit, in another shard
        result = await run.issue(
            "task",
            task.name,
            command=lambda seq, record: TaskCommand(
                seq,
                record.name,
                record,
                arguments,
                task.queue,
                task.max_attempts,
                round(task.backoff * 1000),
                round((task.timeout or 0) * 1000),
                task.on_exhausted,
                limit,
                origin=origin,
            ),
            record=record,
            description=description,
            arguments=arguments,
        )
        return from_json_value(result, task.return_annotation, what=f"result of task {task.name}")  # type: ignore[no-any-return]

    def _task_limit(self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> LimitSpec | None:
        """The limit a call of ``task`` counts against (its task's settings and the call's key), if any."""
        limit = task.limit
        if not limit.active:
            return None
        key = limit.key_of(*args, **kwargs)
        ident = limit_id("t", task.name, key)
        rate = limit.rate
        return LimitSpec(
            ident,
            self._run.shard_of(ident),
            limit.concurrency,
            rate.count if rate else None,
            rate.period_ms if rate else None,
            limit.describe(key),
        )

    async def wait_for_event(
        self, name: str, *, key: str | None = None, timeout: str | float | timedelta | None = None
    ) -> Any:
        """Wait durably for an event and return its payload.

        Without ``key`` it waits for ``send_event(workflow_id, name, payload)``; events sent before the wait
        are kept in order and the oldest is returned at once. With ``key`` it waits for
        ``publish_event(name, payload, key=key)``. ``timeout`` raises ``EventTimeoutError`` at this await.
        """
        if not name or "\n" in name or "\t" in name:
            raise ValueError(f"invalid event name {name!r}")
        timeout_ms = 0 if timeout is None else max(1, round(parse_duration(timeout) * 1000))
        shown = f"event {name!r}" + (f" with key {key!r}" if key is not None else "")
        if timeout is not None:
            shown += f" (timeout {timeout if isinstance(timeout, str) else f'{timeout_ms / 1000:g}s'})"
        return await self._run.issue(
            "event",
            name,
            command=lambda seq, record: EventCommand(seq, record.name, record, key, timeout_ms),
            record={"key": key} if key is not None else None,
            description=shown,
        )

    async def signal(self, name: str, payload: Any = None) -> None:
        """Emit a signal to subscribers, exactly once (never again on replay); does not wait."""
        run = self._run
        text = encode_payload(payload, what=f"payload of signal {name!r}", max_bytes=run.max_payload)
        run.issue(
            "signal",
            name,
            command=lambda seq, record: SignalCommand(seq, record.name, record, text),
            value=None,
            arguments=text,  # compared with the signal log's payload by the offline replayer
        )

    async def continue_as_new(self, input: Any = None) -> NoReturn:
        """End this run and start the workflow again under the same id with ``input`` and a fresh history.

        For workflows that loop forever (an entity, a poller): the history, and the Redis memory it takes,
        stays bounded. What the run still waits on is released, like when a workflow returns; events sent
        meanwhile and a pending cancellation carry over to the next run (see docs/programming-model.md,
        "Continue-as-new"). ``input`` is validated like a start's (``InvalidInputError``, ``PayloadTooLargeError``
        here, at the await).
        """
        run = self._run
        value = run.definition.validate_input(input, strict=False)
        text = encode_payload(value, what=f"input of {run.definition.name}", max_bytes=run.max_payload, json_ready=True)
        raise ContinueAsNew(text)

    # -- deterministic values ---------------------------------------------------------------------------

    def now(self) -> datetime:
        """The current time (aware, UTC), recorded on first run and the same on every replay."""
        value = self._run.issue("value", "now", value=self._run.clock().isoformat())
        return datetime.fromisoformat(str(value))

    def uuid4(self) -> uuid.UUID:
        """A random UUID, recorded on first run."""
        return uuid.UUID(str(self._run.issue("value", "uuid4", value=str(uuid.uuid4()))))

    def random(self) -> float:
        """A random float in [0, 1), recorded on first run."""
        return float(self._run.issue("value", "random", value=random_module.random()))

    def __repr__(self) -> str:
        return f"<Context {self.name}@{self.version} {self.workflow_id}>"
