"""The history of one workflow as a timeline: each durable call with its duration and its place in the run.

Pure functions over the API's JSON (a state and its history), so what the page draws is what ``/api`` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Row", "format_duration", "timeline"]

KIND_LABELS = {
    "task": "task",
    "child": "child workflow",
    "sleep": "sleep",
    "event": "event wait",
    "signal": "signal",
}


def format_duration(seconds: float | None) -> str:
    """``12 ms``, ``1.25 s``, ``3 min 4 s``, ``2 h 5 min``, ``3 d 4 h``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s".replace(".00 s", " s")
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@dataclass(frozen=True, slots=True)
class Row:
    """One call of the timeline."""

    seq: int
    kind: str
    kind_label: str
    name: str
    status: str
    started_at: str | None
    finished_at: str | None
    duration: str  # "" for a signal (instant) or a call that never started
    running: bool  # pending: the duration is "so far"
    offset: float  # the bar's start, percent of the run's span
    width: float  # the bar's length, percent of the run's span
    child_id: str | None
    args: Any
    result: Any
    failed: bool  # the result is an error record
    attempts: int | None = None  # a finished task call: how many attempts it took


def _at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def timeline(state: dict[str, Any], entries: list[dict[str, Any]], now: datetime) -> list[Row]:
    """Rows for the history ``entries`` of the workflow ``state`` (both as the API serves them)."""
    begin = _at(state.get("created_at")) or now
    finished = state.get("status") in ("COMPLETED", "FAILED", "CANCELLED")
    end = _at(state.get("updated_at")) if finished else now
    for entry in entries:
        for key in ("started_at", "finished_at"):
            moment = _at(entry.get(key))
            if moment is not None and end is not None and moment > end:
                end = moment
    span = max(((end or now) - begin).total_seconds(), 0.001)
    rows = []
    for entry in entries:
        started, ended = _at(entry.get("started_at")), _at(entry.get("finished_at"))
        running = entry.get("status") == "pending"
        stop = ended or (now if running else None)
        seconds = (stop - started).total_seconds() if started and stop else None
        offset = max(0.0, min(100.0, ((started - begin).total_seconds() / span) * 100)) if started else 0.0
        width = max(0.5, min(100.0 - offset, (seconds or 0) / span * 100)) if started else 0.0
        result = entry.get("result")
        failed = isinstance(result, dict) and {"type", "message"} <= set(result) and entry.get("status") != "done"
        rows.append(
            Row(
                seq=int(entry["seq"]),
                kind=str(entry["kind"]),
                kind_label=KIND_LABELS.get(str(entry["kind"]), str(entry["kind"])),
                name=str(entry["name"]),
                status=str(entry["status"]),
                started_at=entry.get("started_at"),
                finished_at=entry.get("finished_at"),
                duration="" if entry["kind"] == "signal" else format_duration(seconds),
                running=running,
                offset=round(offset, 2),
                width=round(width, 2),
                child_id=entry.get("child_id"),
                args=entry.get("args"),
                result=result,
                failed=failed,
                attempts=entry.get("attempts"),
            )
        )
    return rows
