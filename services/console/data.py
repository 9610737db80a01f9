"""What the console shows, as JSON documents: the API serves them, and the pages render the very same ones.

Every read goes through the library (``Client`` and ``client.reads``): the console never spells a key. Shapes
are the CLI's ``--json`` shapes (docs/operations.md), plus a few fields the pages need (a history entry's
``child_id`` and ``args``, the overview's figures, its schedules summary).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bdurable.client import Client
from bdurable.errors import InvalidInputError, ScheduleNotFoundError, WorkflowNotFoundError
from bdurable.model import FINISHED, HistoryEntry, ScheduleInfo, Status
from bdurable.scheduling import Scheduled

__all__ = [
    "LIST_LIMIT",
    "ListParams",
    "dead_letters",
    "history",
    "overview",
    "page_limit",
    "parse_time",
    "schedule",
    "schedule_summary",
    "schedule_times",
    "schedules",
    "signals",
    "workflow",
    "workflows",
]

LIST_LIMIT = 50  # the default page size of the lists (workflows, dead letters)
MAX_LIMIT = 500
SOON_MS = 60_000  # "timers due soon": within a minute
RECENT_FAILURES = 10
OVERVIEW_NEXT_RUNS = 5  # the overview's "next runs across schedules"
SCHEDULE_READS = 16  # schedules read at once (each is a few round trips: its hash, then its recent runs' status)


def parse_time(text: str | None, what: str) -> datetime | None:
    """An ISO 8601 time (``2026-12-07T08:00``, ``...Z``, ``...+01:00``) in UTC; without a zone it is UTC (the
    list page shows it in its UTC fields, and sends it back as UTC)."""
    if text is None or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"{what} must be an ISO 8601 time such as 2026-12-07T08:00:00Z, not {text!r}") from None
    try:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00: before the first representable moment in UTC
        raise InvalidInputError(f"{what} is out of the range of times: {text!r}") from None


@dataclass(frozen=True, slots=True)
class ListParams:
    """The workflow list's filters, from a query string (blank fields mean "any")."""

    status: str | None = None
    name: str | None = None
    version: str | None = None
    prefix: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None
    limit: int = LIST_LIMIT

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ListParams:
        def text(key: str) -> str | None:
            value = query.get(key)
            return value.strip() if value is not None and value.strip() else None

        status = text("status")
        if status is not None:
            status = status.upper()
            if status not in Status.__members__:
                raise InvalidInputError(f"unknown status {status!r}; use one of {', '.join(Status.__members__)}")
        return cls(
            status=status,
            name=text("name"),
            version=text("version"),
            prefix=query.get("prefix") or None,  # an id prefix may end in a space: kept as typed
            since=parse_time(text("since"), "since"),
            until=parse_time(text("until"), "until"),
            cursor=text("cursor"),
            limit=page_limit(query),
        )

    def query(self, *, cursor: str | None = None) -> dict[str, str]:
        """The filters as query parameters (for links to the next page)."""
        values = {
            "status": self.status,
            "name": self.name,
            "version": self.version,
            "prefix": self.prefix,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "limit": str(self.limit) if self.limit != LIST_LIMIT else None,
            "cursor": cursor,
        }
        return {key: value for key, value in values.items() if value}


async def workflows(client: Client, params: ListParams) -> dict[str, Any]:
    """``bdurable list --json``: ``{"items": [...], "next_cursor": ...}``."""
    page = await client.list(
        params.status, params.name, params.limit, params.cursor,
        version=params.version, prefix=params.prefix, since=params.since, until=params.until,
    )  # fmt: skip
    return {"items": [state.to_json() for state in page.items], "next_cursor": page.next_cursor}


async def workflow(client: Client, workflow_id: str) -> dict[str, Any]:
    """``bdurable state --json``; unknown or expired: ``WorkflowNotFoundError``."""
    state = await client.get_state(workflow_id)
    if state is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} (never started, or expired)")
    return state.to_json()


def history_entry(entry: HistoryEntry) -> dict[str, Any]:
    """``bdurable history --json``'s entry, plus the child's id and the call's arguments."""
    return {**entry.to_json(), "child_id": entry.child_id, "args": entry.args, "attempts": entry.attempts}


async def history(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    return [history_entry(entry) for entry in await client.history(workflow_id)]


async def signals(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    """The workflow's signal log, oldest first, as ``watch --json`` shows a signal."""
    await workflow(client, workflow_id)
    found = await client.store.read_signals(workflow_id, 0, full=False)
    return [{"seq": r.seq, "name": r.name, "payload": r.payload, "at": r.at_ms} for r in found.signals]


async def dead_letters(client: Client, query: Mapping[str, str]) -> tuple[list[dict[str, Any]], str | None]:
    """A page of ``bdurable dlq list --json`` (query ``limit``, ``cursor``), and the next page's cursor.

    Paged, unlike the CLI's list: an entry holds its arguments and traceback (up to a payload's size each), and
    the console answers whoever can reach it."""
    limit = page_limit(query)
    entries, next_cursor = await client.reads.dead_letter_page(limit, query.get("cursor") or None)
    return [entry.to_json() for entry in entries], next_cursor


def page_limit(query: Mapping[str, str]) -> int:
    """A list's ``limit`` query parameter: 1 to ``MAX_LIMIT``, ``LIST_LIMIT`` when absent."""
    raw = (query.get("limit") or "").strip()
    if not raw:
        return LIST_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInputError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


async def _schedule_infos(client: Client) -> list[ScheduleInfo]:
    """``client.list_schedules()``, read a few schedules at a time rather than one after the other.

    Each schedule costs its hash plus one status read per recent firing (up to 10), and decoding them: measured
    on the 2-core development machine, 100 schedules with 10 firings each take 180-300 ms through
    ``list_schedules`` and about 110 ms read 16 at a time. A schedule deleted between the list of ids and its
    read is left out, as if listed a moment later.
    """
    ids = await client.reads.schedule_ids()
    gate = asyncio.Semaphore(SCHEDULE_READS)

    async def read(schedule_id: str) -> ScheduleInfo | None:
        async with gate:
            try:
                return await client.get_schedule(schedule_id)
            except ScheduleNotFoundError:
                return None

    return [info for info in await asyncio.gather(*(read(i) for i in ids)) if info is not None]


async def schedules(client: Client) -> list[dict[str, Any]]:
    """``bdurable schedule list --json``: every schedule, by id, as ``ScheduleInfo.to_json()``."""
    return [info.to_json() for info in await _schedule_infos(client)]


async def schedule(client: Client, schedule_id: str) -> dict[str, Any]:
    """``bdurable schedule show --json``; unknown: ``ScheduleNotFoundError``."""
    return (await client.get_schedule(schedule_id)).to_json()


async def schedule_times(client: Client) -> list[dict[str, Any]]:
    """Every schedule's id, workflow, paused flag and next 5 runs: what the overview needs, without the status
    reads of each schedule's recent firings (the overview is read often; 100 schedules take about 25 ms this
    way against about 110 ms as :func:`schedules`). The next runs are computed as ``Client.get_schedule`` does
    (from the schedule's next due time; none while paused), which tests/test_console_api.py holds equal."""
    items = []
    for schedule_id in await client.reads.schedule_ids():
        fields = await client.reads.schedule(schedule_id)
        if fields is None:
            continue  # deleted since the ids were read
        spec, state = (scheduled := Scheduled(schedule_id, fields)).spec, scheduled.state
        due = state.next_due_ms
        runs = [] if spec.paused or due is None else spec.next_runs(max(due - 1, 0))
        items.append({"schedule_id": schedule_id, "workflow": spec.workflow, "paused": spec.paused,
                      "next_runs": [moment.isoformat() for moment in runs]})  # fmt: skip
    return items


def schedule_summary(items: list[dict[str, Any]], limit: int = OVERVIEW_NEXT_RUNS) -> dict[str, Any]:
    """The overview's schedules panel: how many, how many paused, and the next ``limit`` runs across them all
    (soonest first; each ``{"at", "schedule_id", "workflow"}``), from schedules as :func:`schedule_times` (or
    :func:`schedules`) gives them."""
    upcoming = sorted(
        (datetime.fromisoformat(at), item["schedule_id"], item["workflow"])
        for item in items
        for at in item["next_runs"]
    )
    return {
        "count": len(items),
        "paused": sum(1 for item in items if item["paused"]),
        "next_runs": [
            {"at": at.isoformat(), "schedule_id": schedule_id, "workflow": workflow}
            for at, schedule_id, workflow in upcoming[:limit]
        ],
    }


async def overview(client: Client) -> dict[str, Any]:
    """The fleet at a glance: counts by status, dispatchers, queues, timers, dead letters, schedules, recent
    failures."""
    reads = client.reads
    counts, dispatchers, soon, failures, scheduled = await asyncio.gather(
        reads.counts(),
        reads.dispatchers(),
        reads.timers_due(SOON_MS),
        client.list(Status.FAILED, limit=RECENT_FAILURES),
        schedule_times(client),
    )
    queues: dict[str, dict[str, int]] = {}
    timers = dlq = 0
    for shard in client.keys.all_shards():
        gauges = await client.store.gauges(shard)
        timers, dlq = timers + gauges.timers, dlq + gauges.dlq
        for gauge in gauges.queues:
            row = queues.setdefault(gauge.queue, {"depth": 0, "oldest_age_ms": -1})
            row["depth"] += gauge.depth
            row["oldest_age_ms"] = max(row["oldest_age_ms"], gauge.oldest_age_ms)
    return {
        "counts": counts,
        "running": sum(n for status, n in counts.items() if status not in FINISHED),
        "dispatchers": [info.to_json() for info in dispatchers],
        "live_dispatchers": sum(1 for info in dispatchers if info.alive),
        "queues": [{"queue": queue, **row} for queue, row in sorted(queues.items())],
        "timers": {"pending": timers, "due_within_minute": soon},
        "dlq": dlq,
        "schedules": schedule_summary(scheduled),
        "recent_failures": [state.to_json() for state in failures.items],
    }
