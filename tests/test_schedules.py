"""Schedules end to end on a real Redis: the calls of INTERFACE §8, each overlap policy, catch-up after an
outage, daylight-saving nights (through backfill, which runs past times now), a backfill of 100 times."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import schedule_app
from support import InProcessRoles, eventually

from bdurable import (
    Client,
    InvalidInputError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    Settings,
    Status,
    Worker,
    WorkflowCancelledError,
)

BERLIN = ZoneInfo("Europe/Berlin")


async def roles_for_schedules(client: Client, roles: InProcessRoles) -> Worker:
    roles.signal_bus()
    roles.dispatcher(schedule_app)
    scheduler = roles.scheduler()
    await registered(client, "scheduled_tick")
    return scheduler


async def registered(client: Client, name: str) -> None:
    """Wait until a dispatcher has registered the workflow (a schedule fires, a backfill starts, only then)."""
    await eventually(lambda: client.reads.registered_versions(name), timeout=10)


async def statuses(client: Client, ids: list[str]) -> list[str | None]:
    found = []
    for workflow_id in ids:
        state = await client.get_state(workflow_id)
        found.append(state.status if state else None)
    return found


async def test_create_read_update_pause_and_delete(client: Client) -> None:
    created = await client.create_schedule(
        "daily-report", schedule_app.tick, {"team": "ops"}, cron="0 9 * * MON-FRI", timezone="Europe/Berlin"
    )
    assert created.workflow == "scheduled_tick"
    assert created.version == "1"
    assert created.input == {"team": "ops"}
    assert created.overlap == "skip"
    assert created.catchup_window == "1m"
    assert len(created.next_runs) == 5
    assert all(r.astimezone(BERLIN).hour == 9 and r.astimezone(BERLIN).weekday() < 5 for r in created.next_runs)
    assert created.recent == []
    assert created.missed == 0
    assert not created.paused
    with pytest.raises(ScheduleAlreadyExistsError):
        await client.create_schedule("daily-report", schedule_app.tick, None, every="1h")

    await client.pause_schedule("daily-report", note="quarter close")
    paused = await client.get_schedule("daily-report")
    assert paused.paused
    assert paused.note == "quarter close"
    assert paused.next_runs == []
    await client.unpause_schedule("daily-report")
    assert len((await client.get_schedule("daily-report")).next_runs) == 5

    updated = await client.update_schedule("daily-report", cron="0 10 * * *", overlap="buffer_one")
    assert updated.cron == "0 10 * * *"
    assert updated.overlap == "buffer_one"
    assert updated.input == {"team": "ops"}
    assert all(r.astimezone(BERLIN).hour == 10 for r in updated.next_runs)
    switched = await client.update_schedule("daily-report", every="15m")
    assert (switched.cron, switched.every) == (None, "15m")

    await client.create_schedule("hourly", "scheduled_tick", [1, 2], every="1h", jitter="5m")
    assert [s.schedule_id for s in await client.list_schedules()] == ["daily-report", "hourly"]
    await client.delete_schedule("hourly")
    assert [s.schedule_id for s in await client.list_schedules()] == ["daily-report"]
    for call in (client.get_schedule("hourly"), client.delete_schedule("hourly"), client.trigger_schedule("hourly"),
                 client.pause_schedule("hourly"), client.update_schedule("hourly", every="1m")):  # fmt: skip
        with pytest.raises(ScheduleNotFoundError):
            await call


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "0 25 * * *"}, "cron"),
        ({"cron": "0 9 * * *", "timezone": "Europe/Atlantis"}, "time zone"),
        ({"every": "1h", "overlap": "queue"}, "overlap"),
        ({"every": "1h", "cron": "0 9 * * *"}, "exactly one"),
        ({"every": "1h", "unknown": 1}, "unexpected keyword"),
        ({"every": "1h", "timezone": ""}, "unknown time zone ''"),
        ({"every": "1h", "paused": "yes"}, "paused must be True or False"),
    ],
)
async def test_bad_options_are_refused_and_nothing_is_written(
    client: Client, options: dict[str, object], message: str
) -> None:
    with pytest.raises((InvalidInputError, TypeError), match=message):
        await client.create_schedule("bad", schedule_app.tick, None, **options)  # type: ignore[arg-type]
    assert await client.list_schedules() == []


async def test_an_interval_schedule_fires_each_time_once_named_by_the_time(
    client: Client, roles: InProcessRoles
) -> None:
    scheduler = await roles_for_schedules(client, roles)
    await client.create_schedule("often", schedule_app.tick, "x", every="1s", overlap="allow_all")
    info = await eventually(lambda: _with_recent(client, "often", 3), timeout=15)
    ran = [firing["workflow_id"] for firing in info.recent]
    assert len(set(ran)) == len(ran)
    times = [firing["scheduled_at"] for firing in info.recent]
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))
    for firing in info.recent[:2]:
        moment = firing["scheduled_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert firing["workflow_id"] == f"often-{moment}Z"
        assert await client.result(firing["workflow_id"], timeout=10) == f"ran {firing['workflow_id']}"
    assert (scheduler.sample("bdurable_schedule_firings_total", schedule="often") or 0) >= 3


async def _with_recent(client: Client, schedule_id: str, count: int) -> object:
    info = await client.get_schedule(schedule_id)
    return info if len(info.recent) >= count else None


async def triggered_runs(client: Client, schedule_id: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        ids.append(await client.trigger_schedule(schedule_id))
        await asyncio.sleep(0.01)  # distinct times (a trigger's time is now, to the millisecond)
    return ids


async def release(client: Client, workflow_id: str) -> None:
    await client.send_event(workflow_id, "release")
    assert await client.result(workflow_id, timeout=10) == workflow_id


async def test_overlap_skip_keeps_one_run(client: Client, roles: InProcessRoles) -> None:
    await roles_for_schedules(client, roles)
    await client.create_schedule("s", schedule_app.hold, None, every="1h", overlap="skip")
    first, second, third = await triggered_runs(client, "s", 3)
    assert first == second == third  # skipped: the trigger names the run in progress
    await release(client, first)
    fourth = await client.trigger_schedule("s")
    assert fourth != first
    assert await statuses(client, [fourth]) in (["RUNNING"], ["AWAITING_EVENT"])


async def test_overlap_buffer_one_runs_one_more_after_the_current(client: Client, roles: InProcessRoles) -> None:
    await roles_for_schedules(client, roles)
    await client.create_schedule("s", schedule_app.hold, None, every="1h", overlap="buffer_one")
    first, buffered, skipped = await triggered_runs(client, "s", 3)
    assert buffered != first
    assert skipped == first  # one run waits already: this time is skipped, the trigger names the run in progress
    await asyncio.sleep(1.5)
    assert await statuses(client, [buffered]) == [None]  # not started while the first runs
    await release(client, first)
    await eventually(lambda: _started(client, buffered), timeout=10)
    await release(client, buffered)
    await asyncio.sleep(1.5)
    runs = await client.list(name="scheduled_hold")
    assert sorted(s.workflow_id for s in runs.items) == sorted([first, buffered])  # at most one waited


async def test_overlap_buffer_all_runs_every_time_in_turn(client: Client, roles: InProcessRoles) -> None:
    await roles_for_schedules(client, roles)
    await client.create_schedule("s", schedule_app.hold, None, every="1h", overlap="buffer_all")
    runs = await triggered_runs(client, "s", 3)
    for index, workflow_id in enumerate(runs):
        await eventually(lambda wid=workflow_id: _started(client, wid), timeout=10)  # type: ignore[misc]
        assert await statuses(client, runs[index + 1 :]) == [None] * (2 - index)  # one at a time
        await release(client, workflow_id)


async def test_overlap_cancel_other_cancels_the_run_in_progress_first(client: Client, roles: InProcessRoles) -> None:
    await roles_for_schedules(client, roles)
    await client.create_schedule("s", schedule_app.hold, None, every="1h", overlap="cancel_other")
    old = await client.trigger_schedule("s")
    await eventually(lambda: _started(client, old), timeout=10)
    new = await client.trigger_schedule("s")
    with pytest.raises(WorkflowCancelledError, match="cancel_other"):
        await client.result(old, timeout=10)
    await eventually(lambda: _started(client, new), timeout=10)
    await release(client, new)


async def test_overlap_allow_all_runs_side_by_side(client: Client, roles: InProcessRoles) -> None:
    await roles_for_schedules(client, roles)
    await client.create_schedule("s", schedule_app.hold, None, every="1h", overlap="allow_all")
    runs = await triggered_runs(client, "s", 3)
    for workflow_id in runs:
        await eventually(lambda wid=workflow_id: _started(client, wid), timeout=10)  # type: ignore[misc]
    for workflow_id in runs:
        await release(client, workflow_id)
    recent = (await client.get_schedule("s")).recent
    assert [f["workflow_id"] for f in recent] == runs
    assert {f["status"] for f in recent} == {"COMPLETED"}


async def _started(client: Client, workflow_id: str) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and state.status == Status.AWAITING_EVENT


async def test_after_an_outage_only_times_within_the_catch_up_window_run(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(schedule_app)
    await client.create_schedule("s", schedule_app.tick, None, every="500ms", catchup_window="1s", overlap="allow_all")
    await asyncio.sleep(4)  # no scheduler: about 8 times pass
    roles.scheduler()
    info = await eventually(lambda: _with_recent(client, "s", 2), timeout=10)
    assert info.missed >= 4  # type: ignore[attr-defined]
    ran = [f["scheduled_at"] for f in info.recent]  # type: ignore[attr-defined]
    assert ran[0] >= info.created_at + timedelta(seconds=2.5)  # type: ignore[attr-defined]


async def test_a_zero_catch_up_window_still_runs_every_time_on_time(client: Client, roles: InProcessRoles) -> None:
    # "0s": never run late, but a time the scheduler fires on time (a few ms after it) is not "missed".
    await roles_for_schedules(client, roles)
    await client.create_schedule("z", schedule_app.tick, None, every="300ms", catchup_window="0s")
    info = await eventually(lambda: _with_recent(client, "z", 3), timeout=10)
    assert info.missed == 0  # type: ignore[attr-defined]


async def test_daylight_saving_nights_in_a_backfill(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(schedule_app)
    await registered(client, "scheduled_tick")
    await client.create_schedule("night", schedule_app.tick, None, cron="30 2 * * *", timezone="Europe/Berlin")
    spring = await client.backfill_schedule(
        "night", datetime(2026, 3, 28, tzinfo=BERLIN), datetime(2026, 3, 31, tzinfo=BERLIN)
    )
    # 02:30 on 29 March does not exist in Berlin: no run that night.
    assert spring == ["night-2026-03-28T01:30:00Z", "night-2026-03-30T00:30:00Z"]
    autumn = await client.backfill_schedule(
        "night", datetime(2026, 10, 24, tzinfo=BERLIN), datetime(2026, 10, 27, tzinfo=BERLIN)
    )
    # 02:30 on 25 October happens twice: one run, at the first (CEST, UTC+2).
    assert autumn == ["night-2026-10-24T00:30:00Z", "night-2026-10-25T00:30:00Z", "night-2026-10-26T01:30:00Z"]
    for workflow_id in spring + autumn:
        assert await client.result(workflow_id, timeout=10) == f"ran {workflow_id}"


async def test_a_backfill_of_a_hundred_times_runs_each_once(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(schedule_app, concurrency=50)
    await registered(client, "scheduled_tick")
    await client.create_schedule("five", schedule_app.tick, None, cron="*/5 * * * *")
    start = datetime(2026, 11, 1, 6, tzinfo=UTC)
    ids = await client.backfill_schedule("five", start, start + timedelta(minutes=500))
    assert len(ids) == len(set(ids)) == 100
    assert ids[0] == "five-2026-11-01T06:00:00Z"
    assert ids[-1] == "five-2026-11-01T14:15:00Z"
    results = await asyncio.gather(*(client.result(i, timeout=60) for i in ids))
    assert results == [f"ran {i}" for i in ids]
    recent = (await client.get_schedule("five")).recent  # a backfill's runs count among the recent firings
    assert [r["workflow_id"] for r in recent] == ids[-10:]
    assert [r["scheduled_at"] for r in recent] == [start + timedelta(minutes=5 * i) for i in range(90, 100)]
    again = await client.backfill_schedule("five", start, start + timedelta(minutes=500))
    assert again == ids  # the same times: nothing new runs
    assert [r["workflow_id"] for r in (await client.get_schedule("five")).recent] == ids[-10:]  # nor twice
    page = await client.list(name="scheduled_tick", limit=500)
    assert sorted(s.workflow_id for s in page.items) == sorted(ids)
    with pytest.raises(InvalidInputError, match="after start"):
        await client.backfill_schedule("five", start, start)


async def test_a_backfill_runs_past_times_only_and_not_without_bound(client: Client, roles: InProcessRoles) -> None:
    # A future time run now would also keep the schedule's own firing at that time from running (its id would
    # exist); a range of years on a busy schedule would start every run at once. Both are refused, nothing run.
    roles.dispatcher(schedule_app)
    await registered(client, "scheduled_tick")
    await client.create_schedule("soon", schedule_app.tick, None, every="1m")
    now = datetime.now(UTC)
    with pytest.raises(InvalidInputError, match="past times only"):
        await client.backfill_schedule("soon", now - timedelta(minutes=10), now + timedelta(minutes=10))
    with pytest.raises(InvalidInputError, match="more than 10,000"):
        await client.backfill_schedule("soon", now - timedelta(days=30), now - timedelta(days=1))
    assert (await client.list(name="scheduled_tick")).items == []
    assert (await client.get_schedule("soon")).recent == []


async def test_concurrent_triggers_are_each_a_run(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(schedule_app)
    await registered(client, "scheduled_tick")
    await client.create_schedule("many", schedule_app.tick, None, cron="0 0 1 1 *", overlap="allow_all")
    async with Client(settings=client.settings) as second, Client(settings=client.settings) as third:
        clients = (client, second, third)
        ids = await asyncio.gather(*(c.trigger_schedule("many") for _ in range(10) for c in clients))
    assert len(set(ids)) == 30  # triggers in the same millisecond used to collapse into one run
    assert await asyncio.gather(*(client.result(i, timeout=30) for i in ids)) == [f"ran {i}" for i in ids]
    runs = (await client.list(name="scheduled_tick", limit=100)).items
    assert sorted(run.workflow_id for run in runs) == sorted(ids)  # and no run beside them, recorded nowhere
    recent = [r["workflow_id"] for r in (await client.get_schedule("many")).recent]
    assert len(recent) == len(set(recent)) == 10


async def test_a_schedule_for_an_unregistered_workflow_waits_for_a_dispatcher(
    client: Client, roles: InProcessRoles
) -> None:
    roles.scheduler()
    await client.create_schedule("later", "scheduled_tick", "hi", every="1s", catchup_window="1h")
    await asyncio.sleep(1.5)
    assert (await client.get_schedule("later")).recent == []  # no dispatcher knows the workflow: nothing starts
    roles.dispatcher(schedule_app)
    info = await eventually(lambda: _with_recent(client, "later", 1), timeout=40)
    first = info.recent[0]["workflow_id"]  # type: ignore[attr-defined]
    assert await client.result(first, timeout=10) == f"ran {first}"


async def test_a_scheduler_that_stops_hands_its_duties_on_at_once(settings: Settings) -> None:
    """Firing schedules and exporting the fleet gauges are leases; a scheduler that stops gives them up, so
    another takes them over at its next look (a third of the lease) instead of after the lease lapses."""
    slow = dataclasses.replace(settings, heartbeat_interval=0.5, heartbeat_timeout=6.0)  # leases of 6 s
    roles = InProcessRoles(slow)
    try:
        async with Client(settings=slow) as client:
            first = roles.scheduler()
            duties = [client.keys.lease(duty) for duty in ("schedules", "fleet-exporter")]
            await eventually(lambda: _held_by(client, duties, "scheduler-"), timeout=5)
            holder = await client.store.redis.get(duties[0])
            roles.scheduler()
            await asyncio.sleep(0.5)
            assert await client.store.redis.get(duties[0]) == holder  # the first still holds them
            await roles.stop(first)
            # Given up at stop: free, or already taken by the other scheduler (its next look may come first).
            assert holder not in [await client.store.redis.get(duty) for duty in duties]
            began = asyncio.get_running_loop().time()
            await eventually(lambda: _held_by(client, duties, "scheduler-"), timeout=5)
            assert asyncio.get_running_loop().time() - began < 3.0  # not the 6 s of a lapse
            assert await client.store.redis.get(duties[0]) != holder
    finally:
        await roles.stop_all()


async def _held_by(client: Client, duties: list[str], prefix: str) -> bool:
    held = [await client.store.redis.get(duty) for duty in duties]
    return all(isinstance(h, str) and h.startswith(prefix) for h in held)
