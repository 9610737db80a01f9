"""Schedules: when a schedule fires, and what each firing does. Pure: no Redis, no clock (``now`` is given).

A schedule fires at the times of its cron expression in its time zone, or every fixed interval. Cron times are
computed on the local wall clock and converted to instants with ``zoneinfo``: a local time that does not exist
(the hour skipped when clocks go forward) does not fire, and one that occurs twice (when clocks go back) fires
once, at its first occurrence. Each firing starts one workflow whose id is the schedule's id and the scheduled
time (``daily-report-2026-12-07T08:00:00Z``), so a firing is idempotent: whoever fires a time, however often,
starts it once.

:func:`plan` decides what one pass does for one schedule: which due times run, which are skipped (and why),
which wait behind a run still in progress (the overlap policy), and the schedule's state afterwards. The
scheduler role executes the plan (see ``services/scheduler``); :class:`bdurable.Client` uses the same plan for
``trigger_schedule``.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from bdurable.codec import dumps, loads
from bdurable.durations import aware_ms, parse_duration
from bdurable.errors import InvalidInputError

__all__ = ["OVERLAP_POLICIES", "Firing", "Plan", "ScheduleSpec", "ScheduleState", "plan", "run_id"]

Overlap = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "allow_all"]
OVERLAP_POLICIES: tuple[Overlap, ...] = ("skip", "buffer_one", "buffer_all", "cancel_other", "allow_all")
RECENT = 10  # firings remembered per schedule
# A time that fires at most this late is on time, whatever the catch-up window: the scheduler's own delay (a
# wake-up, a busy pass) never makes it "missed", so `catchup_window="0s"` means "never later than this".
ON_TIME_MS = 1_000
MAX_FIRINGS_PER_PASS = 1000  # a catch-up beyond this continues in the next pass
MIN_EVERY_MS = 100  # the shortest interval: each time starts a workflow


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def run_id(schedule_id: str, scheduled_ms: int) -> str:
    """The workflow id of a firing: the schedule's id and the scheduled time, UTC (milliseconds when not 0)."""
    moment = _moment(scheduled_ms)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if scheduled_ms % 1000:
        text += f".{scheduled_ms % 1000:03d}"
    return f"{schedule_id}-{text}Z"


def _duration_ms(value: str | float | timedelta | None, what: str) -> int | None:
    if value is None:
        return None
    try:
        return round(parse_duration(value) * 1000)
    except ValueError as exc:
        raise InvalidInputError(f"{what}: {exc}") from None


def _aware_ms(value: datetime | None, what: str) -> int | None:
    return None if value is None else aware_ms(value, what)


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What a schedule runs, and when: everything ``create_schedule`` and ``update_schedule`` set."""

    workflow: str
    input: str  # payload (JSON text)
    cron: str | None = None
    every_ms: int | None = None
    timezone: str = "UTC"
    overlap: Overlap = "skip"
    jitter_ms: int = 0
    catchup_ms: int = 60_000
    paused: bool = False
    note: str = ""
    start_at_ms: int | None = None
    end_at_ms: int | None = None
    version: str | None = None
    created_at_ms: int = 0

    @classmethod
    def build(
        cls,
        workflow: str,
        input_text: str,
        *,
        cron: str | None,
        every: str | float | timedelta | None,
        timezone: str | None,
        overlap: str,
        jitter: str | float | timedelta | None,
        catchup_window: str | float | timedelta | None,
        paused: bool,
        note: str,
        start_at: datetime | None,
        end_at: datetime | None,
        version: str | None,
        created_at_ms: int,
    ) -> ScheduleSpec:
        """Validate every option (``InvalidInputError`` names the first bad one)."""
        spec = cls(
            workflow=workflow,
            input=input_text,
            cron=cron,
            every_ms=_duration_ms(every, "every"),
            timezone="UTC" if timezone is None else timezone,
            overlap=overlap,  # type: ignore[arg-type]  # validated below
            jitter_ms=_duration_ms(jitter, "jitter") or 0,
            catchup_ms=_duration_ms(catchup_window, "catchup_window") or 0 if catchup_window is not None else 60_000,
            paused=paused,
            note=note or "",
            start_at_ms=_aware_ms(start_at, "start_at"),
            end_at_ms=_aware_ms(end_at, "end_at"),
            version=version,
            created_at_ms=created_at_ms,
        )
        spec.check()
        return spec

    def check(self) -> None:
        if (self.cron is None) == (self.every_ms is None):
            raise InvalidInputError("give exactly one of cron and every")
        if self.cron is not None:
            cron: object = self.cron  # callers may pass anything
            if not isinstance(cron, str) or len(cron.split()) != 5:
                raise InvalidInputError(f"invalid cron expression {self.cron!r}: it needs 5 fields")
            try:
                CronSim(self.cron, datetime(2000, 1, 1))
            except CronSimError as exc:
                raise InvalidInputError(f"invalid cron expression {self.cron!r}: {exc}") from None
        paused: object = self.paused  # callers may pass anything: "yes" is not a yes
        if not isinstance(paused, bool):
            raise InvalidInputError(f"paused must be True or False, not {paused!r}")
        if self.every_ms is not None and self.every_ms < MIN_EVERY_MS:
            raise InvalidInputError(f"every must be at least {MIN_EVERY_MS} ms (each time starts a workflow)")
        try:
            ZoneInfo(self.timezone)  # "" is no zone (leave it out for UTC)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise InvalidInputError(f"unknown time zone {self.timezone!r}") from None
        if self.overlap not in OVERLAP_POLICIES:
            raise InvalidInputError(f"invalid overlap {self.overlap!r}: use one of {', '.join(OVERLAP_POLICIES)}")
        if self.jitter_ms < 0 or self.catchup_ms < 0:
            raise InvalidInputError("jitter and catchup_window must not be negative")
        if self.start_at_ms is not None and self.end_at_ms is not None and self.end_at_ms <= self.start_at_ms:
            raise InvalidInputError("end_at must be after start_at")

    def times_after(self, after_ms: int) -> Iterator[int]:
        """The scheduled times strictly after ``after_ms`` (ms, UTC), in order, within start_at/end_at."""
        start = max(after_ms, (self.start_at_ms - 1) if self.start_at_ms is not None else after_ms)
        source = self._cron_after(start) if self.cron is not None else self._every_after(start)
        for moment in source:
            if self.end_at_ms is not None and moment >= self.end_at_ms:
                return
            yield moment

    def _every_after(self, after_ms: int) -> Iterator[int]:
        assert self.every_ms is not None
        anchor = self.start_at_ms if self.start_at_ms is not None else 0  # aligned: "15m" fires at :00, :15, ...
        steps = max(0, (after_ms - anchor) // self.every_ms + 1)
        moment = anchor + steps * self.every_ms
        while True:
            yield moment
            moment += self.every_ms

    def _cron_after(self, after_ms: int) -> Iterator[int]:
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        local = _moment(after_ms).astimezone(zone).replace(tzinfo=None)
        last = after_ms
        for wall in CronSim(self.cron, local):
            first = wall.replace(tzinfo=zone, fold=0)
            if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
                continue  # this local time does not exist (clocks went forward): it does not fire
            moment = _ms(first)  # a local time that occurs twice fires once, at its first occurrence
            if moment > last:
                last = moment
                yield moment

    def next_runs(self, after_ms: int, count: int = 5) -> list[datetime]:
        found = []
        for moment in self.times_after(after_ms):
            found.append(_moment(moment))
            if len(found) == count:
                break
        return found

    def jitter_for(self, schedule_id: str, scheduled_ms: int) -> int:
        """A firing's delay (ms), up to ``jitter``: random-looking, but the same whoever fires it."""
        if not self.jitter_ms:
            return 0
        return zlib.crc32(f"{schedule_id}|{scheduled_ms}".encode()) % (self.jitter_ms + 1)

    def to_fields(self) -> dict[str, str]:
        data = dataclasses.asdict(self)
        return {name: dumps(value) for name, value in data.items()}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> ScheduleSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: loads(value) for name, value in fields.items() if name in names})


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """Where a schedule stands: the next time not yet handled, the run in progress, what waits behind it."""

    next_due_ms: int | None  # None: the schedule has no time left (past end_at)
    running: str | None = None  # the workflow id of its latest run
    buffered: tuple[int, ...] = ()  # scheduled times waiting for the running one to end
    triggers: tuple[int, ...] = ()  # those of the buffered times that a trigger made (they start without jitter)
    recent: tuple[tuple[int, str], ...] = ()  # (scheduled ms, workflow id) of the last firings
    missed: int = 0  # times skipped because they were older than the catch-up window
    rev: int = 0  # bumped by every write (the firing's compare-and-set)

    def to_fields(self) -> dict[str, str]:
        return {
            "next_due": dumps(self.next_due_ms),
            "running": dumps(self.running),
            "buffered": dumps(list(self.buffered)),
            "triggers": dumps(list(self.triggers)),
            "recent": dumps([list(r) for r in self.recent]),
            "missed": dumps(self.missed),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> ScheduleState:
        def get(name: str, default: Any) -> Any:
            return loads(fields[name]) if name in fields else default

        return cls(
            next_due_ms=get("next_due", None),
            running=get("running", None),
            buffered=tuple(get("buffered", [])),
            triggers=tuple(get("triggers", [])),
            recent=tuple((int(r[0]), str(r[1])) for r in get("recent", [])),
            missed=int(get("missed", 0)),
            rev=int(fields.get("rev", "0")),
        )


@dataclass(frozen=True, slots=True)
class Firing:
    """One run to start: its scheduled time, its workflow id, and when it starts (the time plus jitter)."""

    scheduled_ms: int
    workflow_id: str
    start_at_ms: int


@dataclass(slots=True)
class Plan:
    """What one pass does for one schedule."""

    start: list[Firing] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)  # runs to cancel (overlap cancel_other)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> how many times (overlap, missed)
    state: ScheduleState | None = None
    triggered: int | None = None  # the scheduled time a trigger got


def plan(
    schedule_id: str,
    spec: ScheduleSpec,
    state: ScheduleState,
    now_ms: int,
    running_active: bool,
    *,
    trigger_at: int | None = None,
) -> Plan:
    """One pass over a schedule at ``now_ms``: the due times (and ``trigger_at``, a trigger's run) in order,
    each run, skipped or buffered by the overlap policy. ``running_active`` says whether the schedule's latest
    run is still in progress. A paused schedule only runs a trigger; its due times are passed over.

    A trigger is a run *now*: it starts without jitter, at ``trigger_at`` unless the schedule holds that time
    already (a due time, or another trigger's in the same millisecond), then just after the latest time it holds:
    two triggers are two runs, never one run listed twice (``Plan.triggered`` says which time it got)."""
    result = Plan()
    running, active = state.running, running_active
    buffered = list(state.buffered)
    triggers = set(state.triggers)
    recent = list(state.recent)
    missed = state.missed

    def start(scheduled: int, *, jitter: bool = True) -> None:
        nonlocal running, active
        delay = spec.jitter_for(schedule_id, scheduled) if jitter else 0
        firing = Firing(scheduled, run_id(schedule_id, scheduled), scheduled + delay)
        result.start.append(firing)
        recent.append((scheduled, firing.workflow_id))
        running, active = firing.workflow_id, True

    def skip(reason: str) -> None:
        result.skipped[reason] = result.skipped.get(reason, 0) + 1

    def fire(scheduled: int, *, jitter: bool = True) -> None:
        if spec.overlap == "cancel_other" and result.start and result.start[-1].workflow_id == running:
            # The run in progress was started by this very pass, so it has not begun: the newer time takes its
            # place (as it would take a waiting time's), rather than cancelling a run that is not there yet.
            replaced = result.start.pop()
            recent.remove((replaced.scheduled_ms, replaced.workflow_id))
            skip("overlap")
            start(scheduled, jitter=jitter)
            return
        if not active or spec.overlap == "allow_all":
            start(scheduled, jitter=jitter)
        elif spec.overlap == "skip":
            skip("overlap")
        elif spec.overlap == "buffer_one":
            if buffered:
                skip("overlap")
            else:
                buffered.append(scheduled)
        elif spec.overlap == "buffer_all":
            buffered.append(scheduled)
        else:  # cancel_other: cancel the run in progress; this time starts once it has ended
            assert running is not None
            if running not in result.cancel:
                result.cancel.append(running)
            if buffered:
                skip("overlap")  # a newer time replaces the one waiting
            buffered[:] = [scheduled]
        if not jitter and scheduled in buffered:  # a trigger waits: it will start without jitter all the same
            triggers.add(scheduled)

    if buffered and not active:  # the run in progress ended: the oldest buffered time runs now
        waited = buffered.pop(0)
        start(waited, jitter=waited not in triggers)
    due: list[int] = []
    next_due = state.next_due_ms
    while next_due is not None and next_due <= now_ms and len(due) < MAX_FIRINGS_PER_PASS:
        due.append(next_due)
        next_due = next(spec.times_after(next_due), None)
    for scheduled in due:
        if spec.paused:
            continue
        if scheduled < now_ms - max(spec.catchup_ms, ON_TIME_MS):
            missed += 1
            skip("missed")
            continue
        fire(scheduled)
    if trigger_at is not None:
        held = [moment for moment, _ in recent] + buffered + due
        result.triggered = max(trigger_at, max(held) + 1) if trigger_at in held else trigger_at
        fire(result.triggered, jitter=False)
    result.state = ScheduleState(
        next_due_ms=next_due,
        running=running,
        buffered=tuple(buffered),
        triggers=tuple(moment for moment in buffered if moment in triggers),
        recent=tuple(recent[-RECENT:]),
        missed=missed,
        rev=state.rev,
    )
    return result


def first_state(spec: ScheduleSpec, now_ms: int) -> ScheduleState:
    """A new (or unpaused, or rescheduled) schedule's state: its next time after now."""
    return ScheduleState(next_due_ms=next(spec.times_after(now_ms), None))
