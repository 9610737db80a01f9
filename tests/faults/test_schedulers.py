"""Two scheduler processes fire one schedule; the one firing is killed in the middle of a firing (its run
started, the schedule's new state not written). The other takes the duty over: every scheduled time runs,
each exactly once, with no gap."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import schedule_app
from support import InProcessRoles, RoleProcesses, eventually

from bdurable import Client

SECOND = timedelta(seconds=1)


@pytest.mark.timeout(90)
async def test_a_scheduler_killed_mid_firing_loses_and_doubles_nothing(
    client: Client, roles: InProcessRoles, processes: RoleProcesses
) -> None:
    schedule_app.RAN.clear()
    roles.signal_bus()
    roles.dispatcher(schedule_app)
    await eventually(lambda: client.reads.registered_versions("scheduled_tick"), timeout=10)
    await client.create_schedule("beat", schedule_app.tick, None, every="1s", overlap="allow_all")
    doomed = processes.start("scheduler", BDURABLE_CRASH_AT="mid_firing:3")
    await eventually(lambda: _firings(client, 1), timeout=15)  # the doomed one holds the duty
    survivor = processes.start("scheduler")
    await eventually(lambda: doomed.poll() is not None, timeout=20)
    assert doomed.returncode == 137, processes.log_of(doomed)
    assert "crash point mid_firing reached" in processes.log_of(doomed)
    crashed_at = (await client.get_schedule("beat")).recent[-1]["scheduled_at"]
    # The survivor takes over once the lease lapses (heartbeat timeout, 1 s here) and carries on.
    await eventually(lambda: _fired_after(client, crashed_at + 4 * SECOND), timeout=20)
    assert survivor.poll() is None

    runs = sorted(s.workflow_id for s in (await client.list(name="scheduled_tick", limit=1000)).items)
    assert len(runs) >= 6
    # No gap and no double: the runs are exactly the consecutive seconds from the first to the last.
    seconds = [_second_of(r) for r in runs]
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), runs
    for workflow_id in runs:
        assert await client.result(workflow_id, timeout=10) == f"ran {workflow_id}"
    assert all(schedule_app.RAN[r] == 1 for r in runs), {r: schedule_app.RAN[r] for r in runs}


async def _firings(client: Client, count: int) -> bool:
    return len((await client.get_schedule("beat")).recent) >= count


async def _fired_after(client: Client, moment: object) -> bool:
    recent = (await client.get_schedule("beat")).recent
    return bool(recent) and recent[-1]["scheduled_at"] >= moment


def _second_of(workflow_id: str) -> int:
    text = workflow_id.removeprefix("beat-").removesuffix("Z")
    return int(datetime.fromisoformat(text + "+00:00").timestamp())
