"""Plain data returned by the public API: workflow states, pages, signals and history entries."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "FINISHED",
    "DeadLetter",
    "DispatcherInfo",
    "HistoryEntry",
    "ScheduleInfo",
    "Signal",
    "Status",
    "WorkflowPage",
    "WorkflowState",
]


class Status(StrEnum):
    """Workflow statuses; they compare equal to their plain string names."""

    RUNNING = "RUNNING"
    SLEEPING = "SLEEPING"
    AWAITING_EVENT = "AWAITING_EVENT"
    PARKED = "PARKED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    VERSION_MISMATCH = "VERSION_MISMATCH"
    SCHEDULED = "SCHEDULED"  # a delayed start, not yet due
    QUEUED = "QUEUED"  # waiting for a slot of its workflow's concurrency limit


FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


@dataclass(frozen=True, slots=True)
class WorkflowState:
    """A snapshot of one workflow, as ``client.get_state`` and ``bdurable state`` show it."""

    workflow_id: str
    name: str
    version: str
    status: str
    step: int
    waiting_on: str | None
    input: Any
    output: Any
    error: dict[str, str] | None
    parent_id: str | None
    created_at: datetime
    updated_at: datetime
    run: int = 1  # the run (1 for the first; each continue-as-new starts the next)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["updated_at"] = self.updated_at.isoformat()
        return data


@dataclass(frozen=True, slots=True)
class WorkflowPage:
    """One page of ``client.list``; pass ``next_cursor`` back to get the next one."""

    items: list[WorkflowState]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal emitted by a workflow with ``ctx.signal``."""

    name: str
    payload: Any
    at: datetime
    seq: int = 0


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One recorded durable call, as ``bdurable history`` shows it."""

    seq: int
    kind: str
    name: str
    status: str
    result: Any
    started_at: datetime | None
    finished_at: datetime | None
    child_id: str | None = None  # a child call's workflow id (the web console links it)
    args: Any = None  # a task's arguments or a child's input, as recorded with the call
    attempts: int | None = None  # how many attempts a finished task call took

    def to_json(self) -> dict[str, Any]:
        """The shape of ``bdurable history --json`` (without ``child_id``, ``args`` and ``attempts``)."""
        data = asdict(self)
        del data["child_id"], data["args"], data["attempts"]
        data["started_at"] = self.started_at.isoformat() if self.started_at else None
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return data


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task call that exhausted its attempts: what was called, with what, and how it failed."""

    entry_id: str
    workflow_id: str
    task: str
    args: Any
    error: dict[str, str] | None
    attempts: int
    parked: bool
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


@dataclass(frozen=True, slots=True)
class DispatcherInfo:
    """A dispatcher of the fleet, as its registration and heartbeats describe it."""

    worker_id: str
    alive: bool  # its heartbeat has not expired (by the Redis clock)
    expires_at: datetime
    started_at: datetime | None
    last_beat: datetime | None
    workflows: list[str]  # "name@version" of every version it holds
    tasks: list[str]
    queues: list[str]
    concurrency: int
    running: int  # items it ran at its last heartbeat

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for field in ("expires_at", "started_at", "last_beat"):
            moment = getattr(self, field)
            data[field] = moment.isoformat() if moment else None
        return data


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as ``get_schedule``/``list_schedules`` and ``bdurable schedule show`` describe it."""

    schedule_id: str
    workflow: str
    version: str | None
    input: Any
    cron: str | None
    every: str | None  # the interval, e.g. "15m"
    timezone: str
    overlap: str
    jitter: str | None
    catchup_window: str
    paused: bool
    note: str
    start_at: datetime | None
    end_at: datetime | None
    next_runs: list[datetime]  # the next 5 times (none while paused or over)
    recent: list[dict[str, Any]]  # the last 10 firings, oldest first: scheduled_at, workflow_id, status
    missed: int  # times skipped because they were older than the catch-up window
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("start_at", "end_at", "created_at"):
            moment = getattr(self, name)
            data[name] = moment.isoformat() if moment else None
        data["next_runs"] = [moment.isoformat() for moment in self.next_runs]
        data["recent"] = [{**firing, "scheduled_at": firing["scheduled_at"].isoformat()} for firing in self.recent]
        return data
