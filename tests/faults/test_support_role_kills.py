"""Scheduler, signal bus and reaper SIGKILLed while their work falls due: nothing moves while they are
dead, and once restarted every timer fires, every event is delivered and the dead dispatcher's work is
recovered, each exactly once."""

from __future__ import annotations

import asyncio
import time

import fault_app
import pytest
import redis.asyncio as aioredis
from faultkit import Fleet, audit_all, held_by, leftovers, report, shard, statuses, wait_finished
from support import eventually

from bdurable import Client, Settings
from bdurable.wire import parse_timer_member

SLEEP = 4.0  # long enough that the scheduler is surely killed before the sleepers' timers fall due


@pytest.mark.timeout(120)
async def test_scheduler_bus_and_reaper_killed_while_work_is_due(
    fleet: Fleet, client: Client, raw: aioredis.Redis, settings: Settings
) -> None:
    prefix, t = settings.prefix, shard(settings.prefix)
    fleet.support_roles()
    # Each can run 5 items at once: the 10 five-step workflows' tasks (1.5 s each) must spread over both
    # (a dispatcher keeps its workflows' next steps and tasks while it has room: the direct hand-off).
    fleet.dispatcher(concurrency=5)
    doomed = fleet.dispatcher(concurrency=5)
    sleepers = [f"sleeper-{i}" for i in range(10)]
    waiters = [f"waiter-{i}" for i in range(10)]
    workers = [f"worker-{i}" for i in range(10)]
    for wf in sleepers:
        await client.start(fault_app.sleeper, {"seconds": SLEEP}, workflow_id=wf)
    for wf in waiters:
        await client.start(fault_app.waiter, {}, workflow_id=wf)
    for wf in workers:
        await client.start(fault_app.five_steps, {"delay": 1.5}, workflow_id=wf)

    async def settled() -> bool:
        found = await statuses(raw, prefix, [*sleepers, *waiters])
        return all(found[wf] == "SLEEPING" for wf in sleepers) and all(found[wf] == "AWAITING_EVENT" for wf in waiters)

    await eventually(settled, timeout=15)
    fleet.kill(fleet.roles["scheduler"])  # at once: the sleepers' timers must fall due while it is dead
    await eventually(lambda: held_by(raw, prefix, doomed.pid), timeout=15)

    for name in ("signal-bus", "reaper"):
        fleet.kill(fleet.roles[name])
    for wf in waiters:  # accepted durably by the bus's inbound list although no bus runs
        await client.send_event(wf, "go", {"for": wf})
    held = await held_by(raw, prefix, doomed.pid)
    fleet.kill(doomed)  # its work would be recovered by the reaper, which is dead
    killed_at = time.monotonic()

    timers = await raw.zrange(t.timers, 0, -1, withscores=True)
    # the sleepers' due times
    due = [score for member, score in timers if parse_timer_member(str(member))[1].startswith("sleeper-")]
    await asyncio.sleep(max(3.0, max(due, default=0) / 1000 - time.time() + 0.5))  # all of them overdue now
    found = await statuses(raw, prefix, [*sleepers, *waiters])
    assert all(found[wf] == "SLEEPING" for wf in sleepers), found
    assert all(found[wf] == "AWAITING_EVENT" for wf in waiters), found
    assert await raw.zcount(t.timers, "-inf", f"{int(time.time() * 1000)}") >= len(sleepers)
    assert await raw.llen(t.bus) >= len(waiters)
    assert await held_by(raw, prefix, doomed.pid) == held, "the dead dispatcher's work moved without a reaper"

    restarted_at = time.monotonic()
    fleet.support_roles()
    everyone = [*sleepers, *waiters, *workers]
    done = await wait_finished(raw, prefix, everyone, timeout=60)
    finished = time.monotonic()
    assert set(done.values()) == {"COMPLETED"}, {k: v for k, v in done.items() if v != "COMPLETED"}
    assert await held_by(raw, prefix, doomed.pid) == {}

    audits = {a.workflow_id: a for a in await audit_all(raw, prefix, everyone)}
    problems = {wf: a.problems for wf, a in audits.items() if a.problems}
    assert not problems, problems
    for wf in sleepers:  # the timer fired once: one result for the sleep, then the task
        a = audits[wf]
        assert [a.calls[s]["rec"]["k"] for s in sorted(a.calls)] == ["sleep", "task"]
        assert a.output == f"{wf}:1"
    for wf in waiters:  # the event was delivered once, then the task ran, then the signal
        a = audits[wf]
        assert [a.calls[s]["rec"]["k"] for s in sorted(a.calls)] == ["event", "task", "signal"]
        assert a.output == {"for": wf}
        assert [s["name"] for s in a.signals] == ["went"]
    for wf in workers:
        assert audits[wf].output["receipt"] == f"receipt:{wf}:4"
    assert await leftovers(raw, prefix) == {}
    reaped = fleet.events("dead dispatchers reaped")
    report(
        "support_role_kills",
        {
            "timers_overdue_while_scheduler_dead": len(sleepers),
            "events_sent_while_bus_dead": len(waiters),
            "items_held_by_dispatcher_killed_while_reaper_dead": len(held),
            "reaped_after_restart": sum(int(e.get("steps", 0)) + int(e.get("tasks", 0)) for e in reaped),
            "seconds_dead": round(restarted_at - killed_at, 1),
            "seconds_to_finish_after_restart": round(finished - restarted_at, 1),
        },
    )
