"""When schedules fire and what each firing does (bdurable.schedules: pure, the clock is an argument)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bdurable.errors import InvalidInputError
from bdurable.schedules import ScheduleSpec, ScheduleState, first_state, plan, run_id

BERLIN = ZoneInfo("Europe/Berlin")


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def utc(ms_value: int) -> datetime:
    return datetime.fromtimestamp(ms_value / 1000, UTC)


def spec(**options: object) -> ScheduleSpec:
    given: dict[str, object] = {
        "cron": None, "every": None, "timezone": None, "overlap": "skip", "jitter": None,
        "catchup_window": "1m", "paused": False, "note": "", "start_at": None, "end_at": None, "version": None,
        "created_at_ms": 0,
    }  # fmt: skip
    given.update(options)
    return ScheduleSpec.build("report", "null", **given)  # type: ignore[arg-type]


def times(schedule: ScheduleSpec, after: datetime, count: int) -> list[datetime]:
    return schedule.next_runs(ms(after), count)


def test_run_ids_name_the_schedule_and_the_utc_time() -> None:
    assert run_id("daily-report", ms(datetime(2026, 12, 7, 8, tzinfo=UTC))) == "daily-report-2026-12-07T08:00:00Z"
    assert run_id("s", ms(datetime(2026, 12, 7, 8, 0, 0, 250_000, tzinfo=UTC))) == "s-2026-12-07T08:00:00.250Z"


def test_weekday_mornings_in_berlin_follow_the_local_clock_across_the_year() -> None:
    schedule = spec(cron="0 9 * * MON-FRI", timezone="Europe/Berlin")
    friday = datetime(2026, 12, 4, 12, tzinfo=UTC)
    runs = times(schedule, friday, 3)
    assert [r.astimezone(BERLIN).strftime("%a %H:%M") for r in runs] == ["Mon 09:00", "Tue 09:00", "Wed 09:00"]
    assert runs[0] == datetime(2026, 12, 7, 8, tzinfo=UTC)  # CET is UTC+1
    summer = times(schedule, datetime(2026, 7, 3, 12, tzinfo=UTC), 1)[0]
    assert summer == datetime(2026, 7, 6, 7, tzinfo=UTC)  # CEST is UTC+2


def test_a_local_time_skipped_by_spring_forward_does_not_fire() -> None:
    # 2026-03-29: Berlin's clocks jump from 02:00 to 03:00, so 02:30 does not exist that day.
    schedule = spec(cron="30 2 * * *", timezone="Europe/Berlin")
    runs = times(schedule, datetime(2026, 3, 27, 12, tzinfo=UTC), 3)
    local = [r.astimezone(BERLIN) for r in runs]
    assert [d.strftime("%m-%d %H:%M") for d in local] == ["03-28 02:30", "03-30 02:30", "03-31 02:30"]


def test_a_local_time_repeated_by_fall_back_fires_once() -> None:
    # 2026-10-25: Berlin's clocks go from 03:00 back to 02:00, so 02:30 happens twice; it fires at the first.
    schedule = spec(cron="30 2 * * *", timezone="Europe/Berlin")
    runs = times(schedule, datetime(2026, 10, 24, 12, tzinfo=UTC), 3)
    assert runs[0] == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST (UTC+2), not 02:30 CET
    assert runs[1] == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
    hourly = spec(cron="*/30 * * * *", timezone="Europe/Berlin")
    night = times(hourly, datetime(2026, 10, 24, 23, 45, tzinfo=UTC), 6)
    assert len(set(night)) == 6
    assert night == sorted(night)


def test_fixed_intervals_are_aligned_on_the_clock_or_counted_from_start_at() -> None:
    schedule = spec(every="15m")
    after = datetime(2026, 12, 6, 9, 7, 31, tzinfo=UTC)
    assert times(schedule, after, 2) == [
        datetime(2026, 12, 6, 9, 15, tzinfo=UTC),
        datetime(2026, 12, 6, 9, 30, tzinfo=UTC),
    ]
    anchor = datetime(2026, 12, 6, 10, 0, 7, tzinfo=UTC)
    schedule = spec(every="15m", start_at=anchor)
    assert times(schedule, datetime(2026, 12, 6, 9, tzinfo=UTC), 2) == [anchor, anchor + timedelta(minutes=15)]
    assert times(schedule, anchor + timedelta(minutes=20), 1) == [anchor + timedelta(minutes=30)]


def test_end_at_bounds_the_times() -> None:
    start = datetime(2026, 12, 6, tzinfo=UTC)
    schedule = spec(every="1h", start_at=start, end_at=start + timedelta(hours=3))
    assert times(schedule, start - timedelta(seconds=1), 10) == [start + timedelta(hours=h) for h in range(3)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron"),
        ({"cron": "* * *"}, "5 fields"),
        ({"cron": "0 9 * * *", "every": "1h"}, "exactly one"),
        ({}, "exactly one"),
        ({"every": "0s"}, "at least 100 ms"),
        ({"every": "1ms"}, "at least 100 ms"),  # 4,400 workflows in 4 s on two cores
        ({"every": "500000 weeks"}, "at most 1000 years"),
        ({"every": "1h", "jitter": "500000 weeks"}, "at most 1000 years"),
        ({"every": "soon"}, "every"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "time zone"),
        ({"cron": "0 9 * * *", "overlap": "sometimes"}, "overlap"),
        ({"cron": "0 9 * * *", "start_at": datetime(2026, 1, 1)}, "aware"),
    ],
)
def test_bad_options_are_refused_with_the_reason(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        spec(**options)


def test_jitter_is_bounded_and_the_same_for_every_scheduler() -> None:
    schedule = spec(every="1m", jitter="30s")
    delays = [schedule.jitter_for("s", t * 60_000) for t in range(200)]
    assert all(0 <= d <= 30_000 for d in delays)
    assert len(set(delays)) > 100  # spread, not constant
    assert delays == [schedule.jitter_for("s", t * 60_000) for t in range(200)]


EVERY_MINUTE = spec(every="1m", catchup_window="10m")


def state_at(next_due: int, running: str | None = None, buffered: tuple[int, ...] = ()) -> ScheduleState:
    return ScheduleState(next_due_ms=next_due, running=running, buffered=buffered)


def test_a_due_time_starts_its_run_and_moves_on() -> None:
    decided = plan("s", EVERY_MINUTE, state_at(60_000), now_ms=60_500, running_active=False)
    assert [f.workflow_id for f in decided.start] == [run_id("s", 60_000)]
    assert decided.state is not None
    assert decided.state.next_due_ms == 120_000
    assert decided.state.running == run_id("s", 60_000)


def test_times_missed_beyond_the_catch_up_window_are_counted_not_run() -> None:
    schedule = spec(every="1m", catchup_window="2m30s", overlap="allow_all")
    decided = plan("s", schedule, state_at(60_000), now_ms=10 * 60_000, running_active=False)
    assert [f.scheduled_ms for f in decided.start] == [8 * 60_000, 9 * 60_000, 10 * 60_000]
    assert decided.skipped == {"missed": 7}
    assert decided.state is not None
    assert decided.state.missed == 7
    assert decided.state.next_due_ms == 11 * 60_000


@pytest.mark.parametrize(
    ("overlap", "started", "buffered", "cancelled", "skipped"),
    [
        ("skip", 0, 0, 0, {"overlap": 3}),
        ("buffer_one", 0, 1, 0, {"overlap": 2}),
        ("buffer_all", 0, 3, 0, {}),
        ("cancel_other", 0, 1, 1, {"overlap": 2}),
        ("allow_all", 3, 0, 0, {}),
    ],
)
def test_overlap_policies_while_a_run_is_in_progress(
    overlap: str, started: int, buffered: int, cancelled: int, skipped: dict[str, int]
) -> None:
    schedule = spec(every="1m", catchup_window="10m", overlap=overlap)
    decided = plan("s", schedule, state_at(60_000, running="s-old"), now_ms=3 * 60_000, running_active=True)
    assert decided.state is not None
    assert len(decided.start) == started
    assert len(decided.state.buffered) == buffered
    assert decided.cancel == ["s-old"] * cancelled
    assert decided.skipped == skipped


def test_a_buffered_time_starts_when_the_run_in_progress_ends() -> None:
    waiting = state_at(10 * 60_000, running="s-old", buffered=(60_000, 120_000))
    still = plan("s", spec(every="1m", overlap="buffer_all"), waiting, now_ms=150_000, running_active=True)
    assert still.start == []
    assert still.state is not None
    assert still.state.buffered == (60_000, 120_000)
    ended = plan("s", spec(every="1m", overlap="buffer_all"), waiting, now_ms=150_000, running_active=False)
    assert [f.scheduled_ms for f in ended.start] == [60_000]
    assert ended.state is not None
    assert ended.state.buffered == (120_000,)


@pytest.mark.parametrize("overlap", ["buffer_one", "buffer_all", "cancel_other"])
def test_a_trigger_that_waits_starts_without_jitter_too(overlap: str) -> None:
    schedule = spec(every="1h", jitter="30m", overlap=overlap)
    busy = state_at(3_600_000, running="s-old")
    waiting = plan("s", schedule, busy, now_ms=100_000, running_active=True, trigger_at=100_000)
    assert waiting.start == []
    assert waiting.state is not None
    assert (waiting.state.buffered, waiting.state.triggers) == ((100_000,), (100_000,))
    stored = ScheduleState.from_fields({**waiting.state.to_fields(), "rev": "1"})  # as the next pass reads it
    ended = plan("s", schedule, stored, now_ms=101_000, running_active=False)
    assert [(f.scheduled_ms, f.start_at_ms) for f in ended.start] == [(100_000, 100_000)]
    assert ended.state is not None
    assert ended.state.triggers == ()


def test_cancel_other_replaces_a_run_started_in_the_same_pass() -> None:
    # The waiting time (a trigger's, 23.7 s) may start in the pass where a newer time (24 s) is due, or two
    # times may be due at once after an outage: the newer replaces the run not yet begun. (The pass used to
    # start it and "cancel" it before it existed: it ran to its end and the newer time was dropped.)
    schedule = spec(every="4s", catchup_window="1m", overlap="cancel_other")
    waiting = state_at(24_000, running="s-old", buffered=(23_700,))
    decided = plan("s", schedule, waiting, now_ms=24_010, running_active=False)
    assert [f.scheduled_ms for f in decided.start] == [24_000]
    assert decided.cancel == []
    assert decided.skipped == {"overlap": 1}
    assert decided.state is not None
    assert decided.state.running == run_id("s", 24_000)
    assert [r[0] for r in decided.state.recent] == [24_000]
    caught_up = plan("s", schedule, state_at(20_000), now_ms=24_500, running_active=False)
    assert [f.scheduled_ms for f in caught_up.start] == [24_000]
    assert caught_up.cancel == []


def test_a_paused_schedule_passes_over_due_times_but_runs_a_trigger() -> None:
    paused = spec(every="1m", paused=True)
    decided = plan("s", paused, state_at(60_000), now_ms=61_000, running_active=False, trigger_at=61_000)
    assert [f.scheduled_ms for f in decided.start] == [61_000]


def test_a_trigger_runs_now_on_a_time_of_its_own() -> None:
    # No jitter (a trigger is "one run now"), and a time of its own: a second trigger in the same millisecond
    # (or one at a due time) moves just past the latest time the schedule holds, a second run, not the first
    # one listed twice.
    schedule = spec(every="1m", jitter="30s", overlap="allow_all")
    first = plan("s", schedule, state_at(120_000), now_ms=61_000, running_active=False, trigger_at=61_000)
    assert first.triggered == 61_000
    assert [(f.scheduled_ms, f.start_at_ms) for f in first.start] == [(61_000, 61_000)]
    assert first.state is not None
    second = plan("s", schedule, first.state, now_ms=61_000, running_active=True, trigger_at=61_000)
    assert second.triggered == 61_001
    assert [f.workflow_id for f in second.start] == [run_id("s", 61_001)]
    assert second.state is not None
    assert [r[0] for r in second.state.recent] == [61_000, 61_001]
    at_due = plan("s", schedule, state_at(60_000), now_ms=60_000, running_active=False, trigger_at=60_000)
    assert [f.scheduled_ms for f in at_due.start] == [60_000, 60_001]
    assert at_due.start[0].start_at_ms >= 60_000  # the due time keeps its jitter


def test_recent_keeps_the_last_ten_firings() -> None:
    schedule = spec(every="1s", catchup_window="1h", overlap="allow_all")
    decided = plan("s", schedule, state_at(1000), now_ms=30_000, running_active=False)
    assert decided.state is not None
    assert [r[0] for r in decided.state.recent] == list(range(21_000, 31_000, 1000))


def test_a_new_schedule_starts_from_the_next_time_after_now() -> None:
    schedule = spec(cron="0 * * * *")
    now = ms(datetime(2026, 12, 6, 10, 30, tzinfo=UTC))
    assert utc(first_state(schedule, now).next_due_ms or 0) == datetime(2026, 12, 6, 11, tzinfo=UTC)
