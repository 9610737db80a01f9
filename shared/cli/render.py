"""Human-readable output: rich tables and key/value panels for states, pages, histories and dead letters.

Kept apart from the commands so that each command reads as "fetch, then render", and so that the
``--json`` shapes (the contract) and the human shapes (free to improve) never get mixed up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bdurable.cli.common import console
from bdurable.model import HistoryEntry, ScheduleInfo, WorkflowState

__all__ = [
    "compact",
    "print_dead_letter",
    "print_dead_letters",
    "print_history",
    "print_page",
    "print_schedule",
    "print_schedules",
    "print_state",
    "status_text",
]

_STATUS_STYLES = {
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "VERSION_MISMATCH": "magenta",
    "PARKED": "magenta",
    "RUNNING": "cyan",
    "SLEEPING": "blue",
    "AWAITING_EVENT": "blue",
    "SCHEDULED": "blue",
    "QUEUED": "blue",
}


def status_text(status: str) -> Text:
    """A status word, coloured by outcome (colour is dropped automatically when piped)."""
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def compact(value: Any, limit: int = 60) -> str:
    """A JSON value on one short line, for table cells."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(moment: object) -> str:
    """A timestamp in local time, to the second; other shapes (ISO text from JSON) as they are."""
    if moment is None:
        return ""
    if isinstance(moment, datetime):
        return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(moment, str):
        try:
            return _when(datetime.fromisoformat(moment))
        except ValueError:
            return moment
    return str(moment)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _error_line(error: Mapping[str, Any] | None) -> str:
    if not error:
        return ""
    kind = error.get("type") or "Error"
    message = error.get("message") or error.get("reason") or ""
    return f"{kind}: {message}" if message else str(kind)


def _key_values(rows: Iterable[tuple[str, Any]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else escape(str(value)))
    return table


def print_state(state: WorkflowState) -> None:
    """Everything ``bdurable state`` shows: identity, progress, and the output or the error."""
    rows: list[tuple[str, Any]] = [
        ("workflow", state.workflow_id),
        ("name", f"{state.name}@{state.version}"),
        ("status", status_text(state.status)),
        ("step", state.step),
    ]
    if state.run > 1:
        rows.append(("run", f"{state.run} (continued as new {state.run - 1} times; the history is this run's)"))
    if state.waiting_on:
        rows.append(("waiting on", state.waiting_on))
    if state.parent_id:
        rows.append(("parent", state.parent_id))
    rows += [("created", _when(state.created_at)), ("updated", _when(state.updated_at))]
    rows.append(("input", _pretty(state.input)))
    if state.status == "COMPLETED" or state.output is not None:
        rows.append(("output", _pretty(state.output)))
    if state.error:
        rows.append(("error", _error_line(state.error)))
        if state.error.get("traceback"):
            rows.append(("traceback", str(state.error["traceback"]).rstrip()))
    console().print(_key_values(rows))


def print_page(items: list[WorkflowState]) -> None:
    """One page of ``bdurable list`` as a table, newest first."""
    if not items:
        console().print("no workflows")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "VERSION", "STATUS", "STEP", "WAITING ON", "UPDATED"):
        table.add_column(column)
    for state in items:
        table.add_row(
            escape(state.workflow_id),
            escape(state.name),
            escape(state.version),
            status_text(state.status),
            str(state.step),
            escape(state.waiting_on or ""),
            _when(state.updated_at),
        )
    console().print(table)


def print_history(entries: list[HistoryEntry]) -> None:
    """The recorded durable calls of one workflow, in order."""
    if not entries:
        console().print("no durable steps recorded yet")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("SEQ", "KIND", "NAME", "STATUS", "RESULT", "STARTED", "FINISHED"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            str(entry.seq),
            entry.kind,
            escape(entry.name),
            escape(entry.status),
            escape("" if entry.result is None else compact(entry.result)),
            _when(entry.started_at),
            _when(entry.finished_at),
        )
    console().print(table)


def print_dead_letters(entries: list[dict[str, Any]]) -> None:
    """``bdurable dlq list``: one row per entry (taking the entries' JSON form, the stable shape)."""
    if not entries:
        console().print("the dead-letter queue is empty")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ENTRY", "WORKFLOW", "TASK", "ATTEMPTS", "PARKED", "ERROR", "CREATED"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            escape(str(entry.get("entry_id", ""))),
            escape(str(entry.get("workflow_id") or "")),
            escape(str(entry.get("task", ""))),
            str(entry.get("attempts", "")),
            "yes" if entry.get("parked") else "no",
            escape(compact(_error_line(entry.get("error")), 50)),
            _when(entry.get("created_at")),
        )
    console().print(table)


def print_dead_letter(entry: dict[str, Any]) -> None:
    """``bdurable dlq show``: every field of one entry, the error's traceback included."""
    error = entry.get("error") or {}
    rows: list[tuple[str, Any]] = [
        ("entry", entry.get("entry_id", "")),
        ("workflow", entry.get("workflow_id") or ""),
        ("task", entry.get("task", "")),
        ("attempts", entry.get("attempts", "")),
        ("parked", "yes (the workflow waits for `dlq retry` or `dlq fail`)" if entry.get("parked") else "no"),
        ("created", _when(entry.get("created_at"))),
        ("args", _pretty(entry.get("args"))),
        ("error", _error_line(error) if isinstance(error, Mapping) else str(error)),
    ]
    if isinstance(error, Mapping) and error.get("traceback"):
        rows.append(("traceback", str(error["traceback"]).rstrip()))
    console().print(_key_values(rows))


def _timing(info: ScheduleInfo) -> str:
    when = f"cron {info.cron} ({info.timezone})" if info.cron else f"every {info.every}"
    return when + (f", jitter {info.jitter}" if info.jitter else "")


def print_schedule(info: ScheduleInfo) -> None:
    """Everything ``bdurable schedule show`` shows: what runs when, the next runs and the recent firings."""
    rows: list[tuple[str, Any]] = [
        ("schedule", info.schedule_id),
        ("workflow", info.workflow + (f"@{info.version}" if info.version else "")),
        ("when", _timing(info)),
        ("overlap", info.overlap),
        ("catch-up window", info.catchup_window),
        ("state", Text("paused", style="yellow") if info.paused else Text("active", style="green")),
    ]
    if info.note:
        rows.append(("note", info.note))
    if info.start_at or info.end_at:
        rows.append(("between", f"{_when(info.start_at) or '…'} and {_when(info.end_at) or '…'}"))
    rows.append(("input", _pretty(info.input)))
    rows.append(("next runs", "\n".join(_when(moment) for moment in info.next_runs) or "none"))
    if info.missed:
        rows.append(("missed", info.missed))
    rows.append(("created", _when(info.created_at)))
    console().print(_key_values(rows))
    if info.recent:
        table = Table(box=None, header_style="bold", pad_edge=False, title="recent firings", title_justify="left")
        for column in ("SCHEDULED AT", "WORKFLOW ID", "STATUS"):
            table.add_column(column)
        for firing in info.recent:
            table.add_row(_when(firing["scheduled_at"]), escape(firing["workflow_id"]), status_text(firing["status"]))
        console().print(table)


def print_schedules(found: list[ScheduleInfo]) -> None:
    """``bdurable schedule list``: one row per schedule."""
    if not found:
        console().print("no schedules")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "WORKFLOW", "WHEN", "OVERLAP", "STATE", "NEXT RUN"):
        table.add_column(column)
    for info in found:
        table.add_row(
            escape(info.schedule_id),
            escape(info.workflow),
            escape(_timing(info)),
            info.overlap,
            Text("paused", style="yellow") if info.paused else Text("active", style="green"),
            _when(info.next_runs[0]) if info.next_runs else "",
        )
    console().print(table)
