"""Schedules through the client (create, read, pause, trigger, backfill, update, delete), and the execution of
a firing, which the scheduler role and ``trigger_schedule`` share.

The plan of a firing is pure (:mod:`bdurable.schedules`); executing it starts each run by its derived id (so a
time fires once however often it is executed), cancels what ``cancel_other`` replaces, then writes the
schedule's new state with a compare-and-set: a writer that lost the race reads the schedule again and redoes
its pass, which starts nothing twice.
"""

from __future__ import annotations

import builtins
import dataclasses
import itertools
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from bdurable.codec import encode_payload, to_json_value
from bdurable.config import Settings
from bdurable.durations import aware_ms
from bdurable.errors import (
    InvalidInputError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    UnknownWorkflowError,
)
from bdurable.model import FINISHED, ScheduleInfo
from bdurable.reads import Reads, ms
from bdurable.runtime.faults import crash_point
from bdurable.schedules import RECENT, Firing, Plan, ScheduleSpec, ScheduleState, first_state, plan, run_id
from bdurable.schema import validate_against_schema
from bdurable.store import Store
from bdurable.workflow import Workflow

__all__ = ["ScheduleMethods", "Scheduled", "change_schedule", "fire_schedule", "load_schedule", "run_in_progress"]

T = TypeVar("T")

BUFFERED_RECHECK_MS = 1000  # how often a run waiting behind another (buffer_*, cancel_other) is checked
MAX_BACKFILL = 10_000  # times one backfill call may run: each is a workflow started at once
MAX_SCHEDULE_ID = 200  # a firing's workflow id adds the time: it must stay within a workflow id's 256


class Scheduled:
    """A schedule as stored: its spec and its state."""

    def __init__(self, schedule_id: str, fields: Mapping[str, str]) -> None:
        self.schedule_id = schedule_id
        self.fields = fields
        self.spec = ScheduleSpec.from_fields(fields)
        self.state = ScheduleState.from_fields(fields)

    def due_field(self, now_ms: int) -> str:
        """The schedule's score in the due index: its next time (none when paused or over), and while a run
        waits behind one in progress, a second from now: the wait is checked every second."""
        times = [self.state.next_due_ms] if self.state.next_due_ms is not None and not self.spec.paused else []
        if self.state.buffered:
            times.append(now_ms + BUFFERED_RECHECK_MS)
        return str(min(times)) if times else ""


async def run_in_progress(reads: Reads, scheduled: Scheduled) -> bool:
    """Whether the schedule's latest run is still active (the overlap policy's question)."""
    running = scheduled.state.running
    return running is not None and (await reads.status(running)) not in (*FINISHED, None)


async def load_schedule(reads: Reads, schedule_id: str) -> Scheduled:
    fields = await reads.schedule(schedule_id)
    if fields is None:
        raise ScheduleNotFoundError(f"no schedule with id {schedule_id!r}")
    return Scheduled(schedule_id, fields)


async def fire_schedule(
    store: Store, reads: Reads, schedule_id: str, *, now_ms: int | None = None, trigger_at: int | None = None
) -> Plan | None:
    """One pass over a schedule: plan at ``now_ms`` (else Redis's clock, read at each try), start and cancel
    as planned, write the new state. ``trigger_at`` adds one run at that time (``trigger_schedule``).

    Returns the plan executed, or ``None`` when the schedule is gone. Retries from a fresh read while another
    writer changed the schedule meanwhile (the starts are idempotent: nothing runs twice).

    A trigger's run starts before the write, like every run, so its time is kept across retries: a retry at
    another time would leave the first run started and recorded nowhere. It moves on only when a run of that
    id exists that this call did not create (another trigger's, in the same millisecond), or the schedule holds
    that time already; both are someone else's run, never one of ours left behind.
    """
    trigger = [trigger_at]
    ours: set[int] = set()  # trigger times whose run this call created

    async def execute(scheduled: Scheduled, now: int) -> tuple[dict[str, str], Plan]:
        active = await run_in_progress(reads, scheduled)
        while True:
            decided = plan(schedule_id, scheduled.spec, scheduled.state, now, active, trigger_at=trigger[0])
            for workflow_id in decided.cancel:
                await store.cancel(workflow_id, f"schedule {schedule_id}: a newer run replaces it (cancel_other)")
            taken = False
            for firing in decided.start:
                created = await _start(store, reads, scheduled.spec, firing, now)
                if firing.scheduled_ms == decided.triggered:
                    if created:
                        ours.add(firing.scheduled_ms)
                    taken = not created and firing.scheduled_ms not in ours
            trigger[0] = decided.triggered
            if not taken:
                break
            assert decided.triggered is not None
            trigger[0] = decided.triggered + 1
        if decided.start:
            crash_point("mid_firing")
        assert decided.state is not None
        return decided.state.to_fields(), decided

    try:
        return await change_schedule(store, reads, schedule_id, execute, now_ms=now_ms)
    except ScheduleNotFoundError:
        return None


async def change_schedule(
    store: Store,
    reads: Reads,
    schedule_id: str,
    change: Callable[[Scheduled, int], Awaitable[tuple[dict[str, str], T]]],
    *,
    now_ms: int | None = None,
) -> T:
    """Apply ``change`` to a schedule with a compare-and-set, and return what it returned.

    ``change(scheduled, now)`` gives the fields to write (and a result). The write lands only if the schedule's
    revision is still the one read; if another writer (a scheduler's pass, a client's update) changed it
    meanwhile, the schedule is read again and ``change`` applied again, so no change is lost and none is made
    on a stale copy. ``now`` is ``now_ms``, else Redis's clock read at each pass. Raises
    ``ScheduleNotFoundError`` when the schedule is gone.
    """
    while True:
        scheduled = await load_schedule(reads, schedule_id)
        now = now_ms if now_ms is not None else await reads.now_ms()
        fields, result = await change(scheduled, now)
        after = Scheduled(schedule_id, {**scheduled.fields, **fields})
        written = await store.schedule_write(
            schedule_id, expected=str(scheduled.state.rev), due=after.due_field(now), fields=fields
        )
        if written == "ok":
            return result
        if written == "missing":
            raise ScheduleNotFoundError(f"no schedule with id {schedule_id!r}")


async def _start(store: Store, reads: Reads, spec: ScheduleSpec, firing: Firing, now_ms: int) -> bool:
    """Start a firing's run (idempotent on its id); whether this call created it."""
    registration = await reads.registration(spec.workflow, spec.version, firing.workflow_id)
    if registration is None:
        raise UnknownWorkflowError(
            f"no dispatcher has registered workflow {spec.workflow!r}"
            + (f" version {spec.version!r}" if spec.version else "")
        )
    start_at = firing.start_at_ms if firing.start_at_ms > now_ms else 0
    # The schedule keeps its input sealed; each run gets it sealed anew (under today's primary key). Without
    # the key it was sealed with, the firing fails with EncryptionKeyMissingError rather than run on a guess.
    reply = await store.start(
        firing.workflow_id, name=spec.workflow, version=registration.version, queue=registration.queue,
        input=store.codec.open_text(spec.input), start_at_ms=start_at,
    )  # fmt: skip
    return reply.outcome == "created"


def _text(duration_ms: int | None) -> str | None:
    if duration_ms is None:
        return None
    seconds = duration_ms / 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{duration_ms}ms"


class ScheduleMethods:
    """The schedule calls of :class:`bdurable.Client` (INTERFACE §8)."""

    settings: Settings

    if TYPE_CHECKING:

        @property
        def store(self) -> Store: ...

        @property
        def reads(self) -> Reads: ...

    async def create_schedule(
        self,
        schedule_id: str,
        workflow: Workflow[Any, Any] | str,
        input: Any = None,
        *,
        cron: str | None = None,
        every: str | float | timedelta | None = None,
        timezone: str | None = None,
        overlap: str = "skip",
        jitter: str | float | timedelta | None = None,
        catchup_window: str | float | timedelta | None = "1m",
        paused: bool = False,
        note: str = "",
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        version: str | None = None,
    ) -> ScheduleInfo:
        """Create a schedule that starts ``workflow`` with ``input`` at every ``cron`` time in ``timezone`` (or
        ``every`` interval). Raises ``ScheduleAlreadyExistsError`` for an id in use, ``InvalidInputError`` for a
        bad option (cron, time zone, overlap, input)."""
        _check_schedule_id(schedule_id)
        now = await self.reads.now_ms()
        timing = ScheduleSpec.build(  # the options are checked first, then the input against the workflow
            "", "null", cron=cron, every=every, timezone=timezone, overlap=overlap, jitter=jitter,
            catchup_window=catchup_window, paused=paused, note=note, start_at=start_at, end_at=end_at,
            version=version if not isinstance(workflow, Workflow) else workflow.version, created_at_ms=now,
        )  # fmt: skip
        name, input_text = await self._schedule_target(workflow, input, timing.version)
        spec = dataclasses.replace(timing, workflow=name, input=input_text)
        scheduled = Scheduled(schedule_id, {**spec.to_fields(), **first_state(spec, now).to_fields()})
        fields = {**spec.to_fields(), **scheduled.state.to_fields()}
        due = scheduled.due_field(now)
        written = await self.store.schedule_write(schedule_id, expected="new", due=due, fields=fields)
        if written == "exists":
            raise ScheduleAlreadyExistsError(f"a schedule with id {schedule_id!r} exists: update or delete it")
        return await self.get_schedule(schedule_id)

    async def get_schedule(self, schedule_id: str) -> ScheduleInfo:
        """The schedule: its options, next 5 runs, last 10 firings (with their status), missed times."""
        scheduled = await load_schedule(self.reads, schedule_id)
        return await self._info(scheduled)

    async def list_schedules(self) -> builtins.list[ScheduleInfo]:
        """Every schedule, by id."""
        found = []
        for schedule_id in await self.reads.schedule_ids():
            fields = await self.reads.schedule(schedule_id)
            if fields is not None:
                found.append(await self._info(Scheduled(schedule_id, fields)))
        return found

    async def pause_schedule(self, schedule_id: str, note: str | None = None) -> None:
        """Stop firing (times passed while paused do not run later); a buffered run still starts."""
        await self._modify(schedule_id, paused=True, note=note)

    async def unpause_schedule(self, schedule_id: str) -> None:
        """Fire again, from the next time after now."""
        await self._modify(schedule_id, paused=False)

    async def update_schedule(self, schedule_id: str, **options: Any) -> ScheduleInfo:
        """Change any option of ``create_schedule`` (the workflow and input too); the next time is recomputed."""
        await self._modify(schedule_id, **options)
        return await self.get_schedule(schedule_id)

    async def delete_schedule(self, schedule_id: str) -> None:
        """Remove the schedule; workflows it started are not touched."""
        written = await self.store.schedule_write(schedule_id, expected="*", due="delete", fields={})
        if written == "missing":
            raise ScheduleNotFoundError(f"no schedule with id {schedule_id!r}")

    async def trigger_schedule(self, schedule_id: str) -> str:
        """One run now, obeying the overlap policy. Returns the id of the run that carries the trigger: the
        one started (or buffered, with ``buffer_one``/``buffer_all``), or, skipped (``skip``) because a run is
        in progress, that run's id."""
        now = await self.reads.now_ms()
        await load_schedule(self.reads, schedule_id)
        decided = await fire_schedule(self.store, self.reads, schedule_id, now_ms=now, trigger_at=now)
        if decided is None:
            raise ScheduleNotFoundError(f"no schedule with id {schedule_id!r}")
        assert decided.state is not None
        assert decided.triggered is not None
        moment = decided.triggered
        if any(f.scheduled_ms == moment for f in decided.start) or moment in decided.state.buffered:
            return run_id(schedule_id, moment)
        assert decided.state.running is not None
        return decided.state.running

    async def backfill_schedule(self, schedule_id: str, start: datetime, end: datetime) -> builtins.list[str]:
        """One run per scheduled time in ``[start, end)`` (each at once, whatever the overlap policy); returns
        their ids. A time that already ran is not run again (its id exists)."""
        scheduled = await load_schedule(self.reads, schedule_id)
        first, last = aware_ms(start, "start"), aware_ms(end, "end")
        if last <= first:
            raise InvalidInputError("end must be after start")
        spec, now = scheduled.spec, await self.reads.now_ms()
        moments = list(itertools.islice(itertools.takewhile(lambda t: t < last, spec.times_after(first - 1)),
                                        MAX_BACKFILL + 1))  # fmt: skip
        if len(moments) > MAX_BACKFILL:
            raise InvalidInputError(
                f"the range holds more than {MAX_BACKFILL:,} of the schedule's times: backfill it in smaller ranges"
            )
        future = [moment for moment in moments if moment > now]
        if future:  # run now, it would also keep the firing at that time from running (its id would exist)
            raise InvalidInputError(
                f"a backfill runs past times only: {ms(future[0]).isoformat()} is later than now (the Redis server's "
                "clock); the schedule fires it when it comes"
            )
        started: builtins.list[str] = []
        created: builtins.list[tuple[int, str]] = []  # the runs this backfill started (not those run before)
        for moment in moments:
            firing = Firing(moment, run_id(schedule_id, moment), moment)
            if await _start(self.store, self.reads, spec, firing, moment):
                created.append((moment, firing.workflow_id))
            started.append(firing.workflow_id)
        await self._remember(schedule_id, created)
        return started

    async def _remember(self, schedule_id: str, firings: builtins.list[tuple[int, str]]) -> None:
        """Add runs started outside a pass (a backfill) to the schedule's recent firings, as Temporal lists a
        backfill's actions among the recent ones (compare-and-set, like every change of a schedule)."""
        if not firings:
            return

        async def add(scheduled: Scheduled, now: int) -> tuple[dict[str, str], None]:
            state = scheduled.state
            known = set(state.recent)
            recent = [*state.recent, *(f for f in firings if f not in known)][-RECENT:]
            return dataclasses.replace(state, recent=tuple(recent)).to_fields(), None

        await change_schedule(self.store, self.reads, schedule_id, add)

    async def _schedule_target(self, workflow: object, input: Any, version: str | None) -> tuple[str, str]:
        """The workflow's name and the input's payload, validated against the workflow: its definition, or the
        JSON Schema its dispatchers registered (a name nobody registered yet is accepted: it must be registered
        by the time the schedule fires)."""
        if isinstance(workflow, Workflow):
            value = workflow.validate_input(input)
            name = workflow.name
        elif isinstance(workflow, str) and workflow:
            name, value = workflow, to_json_value(input)
            registration = await self.reads.registration(name, version, name)
            if registration is not None and registration.schema is not None:
                validate_against_schema(value, registration.schema, f"{name}@{registration.version}")
        else:
            raise InvalidInputError("workflow must be a workflow or a registered workflow name")
        text = encode_payload(value, what=f"input of schedule's workflow {name}", max_bytes=self.settings.max_payload,
                              json_ready=True)  # fmt: skip
        return name, self.store.codec.seal(text)  # stored with the schedule: sealed like every payload

    async def _modify(self, schedule_id: str, **options: Any) -> None:
        """Change options, compare-and-set (another writer meanwhile: read again, apply again)."""
        allowed = {"workflow", "input", "cron", "every", "timezone", "overlap", "jitter", "catchup_window", "paused",
                   "note", "start_at", "end_at", "version"}  # fmt: skip
        unknown = set(options) - allowed
        if unknown:
            raise InvalidInputError(f"unknown schedule option(s): {', '.join(sorted(unknown))}")

        async def apply(scheduled: Scheduled, now: int) -> tuple[dict[str, str], None]:
            spec = scheduled.spec
            changes: dict[str, Any] = {}
            if "workflow" in options or "input" in options:
                target = options.get("workflow", spec.workflow)
                value = options["input"] if "input" in options else self.store.codec.open(spec.input)
                changes["workflow"], changes["input"] = await self._schedule_target(target, value, spec.version)
            else:
                changes["input"] = self._resealed(spec.input)
            timing = {"cron", "every", "timezone", "start_at", "end_at"} & set(options)
            rebuilt = ScheduleSpec.build(
                changes.get("workflow", spec.workflow), changes.get("input", spec.input),
                cron=options.get("cron", spec.cron if "every" not in options else None),
                every=options.get("every", _text(spec.every_ms) if "cron" not in options else None),
                timezone=options.get("timezone", spec.timezone), overlap=options.get("overlap", spec.overlap),
                jitter=options.get("jitter", _text(spec.jitter_ms) if spec.jitter_ms else None),
                catchup_window=options.get("catchup_window", _text(spec.catchup_ms) or "0s"),
                paused=options.get("paused", spec.paused),
                note=options["note"] if options.get("note") is not None else spec.note,
                start_at=options.get("start_at", ms(spec.start_at_ms) if spec.start_at_ms is not None else None),
                end_at=options.get("end_at", ms(spec.end_at_ms) if spec.end_at_ms is not None else None),
                version=options.get("version", spec.version), created_at_ms=spec.created_at_ms,
            )  # fmt: skip
            state = scheduled.state
            if timing or (spec.paused and not rebuilt.paused):  # times from now on
                state = dataclasses.replace(state, next_due_ms=first_state(rebuilt, now).next_due_ms)
            return {**rebuilt.to_fields(), **state.to_fields()}, None

        await change_schedule(self.store, self.reads, schedule_id, apply)

    def _resealed(self, sealed: str) -> str:
        """The schedule's input sealed under today's primary key, as every change leaves it (the key rotation of
        docs/security.md relies on it); as it was where that cannot be done: this process lacks the key it was
        sealed with (an operator's keyless CLI may still pause a schedule), or the custom codec's service does
        not answer (a pause must not depend on it). A firing reports what is wrong with the input itself."""
        try:
            return self.store.codec.seal(self.store.codec.open_text(sealed))
        except Exception:
            return sealed

    async def _info(self, scheduled: Scheduled) -> ScheduleInfo:
        spec, state = scheduled.spec, scheduled.state
        recent = []
        for scheduled_ms, workflow_id in state.recent:
            status = await self.reads.status(workflow_id)
            recent.append({"scheduled_at": ms(scheduled_ms), "workflow_id": workflow_id, "status": status or "EXPIRED"})
        after = max(state.next_due_ms - 1, 0) if state.next_due_ms is not None else None
        return ScheduleInfo(
            schedule_id=scheduled.schedule_id,
            workflow=spec.workflow,
            version=spec.version,
            input=self.reads.codec.view(spec.input),
            cron=spec.cron,
            every=_text(spec.every_ms),
            timezone=spec.timezone,
            overlap=spec.overlap,
            jitter=_text(spec.jitter_ms) if spec.jitter_ms else None,
            catchup_window=_text(spec.catchup_ms) or "0s",
            paused=spec.paused,
            note=spec.note,
            start_at=ms(spec.start_at_ms) if spec.start_at_ms is not None else None,
            end_at=ms(spec.end_at_ms) if spec.end_at_ms is not None else None,
            next_runs=[] if spec.paused or after is None else spec.next_runs(after),
            recent=recent,
            missed=state.missed,
            created_at=ms(spec.created_at_ms),
        )


def _check_schedule_id(schedule_id: str) -> None:
    value: object = schedule_id
    if not isinstance(value, str) or not schedule_id:
        raise InvalidInputError("a schedule id must be a non-empty string")
    if len(schedule_id) > MAX_SCHEDULE_ID:
        raise InvalidInputError(f"a schedule id is at most {MAX_SCHEDULE_ID} characters")
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in schedule_id):
        raise InvalidInputError("a schedule id may not contain control characters")
