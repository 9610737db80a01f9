"""A dispatcher frozen (SIGSTOP) past its heartbeat timeout: its work is recovered elsewhere, and when it
thaws (SIGCONT) every commit it still tries is rejected by the lease check and counted."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import fault_app
import pytest
import redis.asyncio as aioredis
from faultkit import Fleet, audit_all, counts, held_by, leftovers, report, scrape, wait_finished
from support import eventually

from bdurable import Client, Settings
from bdurable.embedded import free_port
from bdurable.wire import WorkItem

WORKFLOWS = 30
TASK_SECONDS = 2.0


@pytest.mark.timeout(120)
async def test_a_frozen_dispatcher_is_fenced_when_it_thaws(
    fleet: Fleet, client: Client, raw: aioredis.Redis, settings: Settings
) -> None:
    prefix = settings.prefix
    fleet.support_roles()
    port = free_port()
    frozen = fleet.dispatcher("--metrics-port", str(port))
    ids = [f"frozen-{i:02d}" for i in range(WORKFLOWS)]
    await asyncio.gather(*(client.start(fault_app.five_steps, {"delay": TASK_SECONDS}, workflow_id=wf) for wf in ids))
    await eventually(lambda: held_by(raw, prefix, frozen.pid), timeout=15)
    await asyncio.sleep(0.5)  # its tasks are in the middle of their 2 s of work

    os.kill(frozen.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    await asyncio.sleep(0.2)  # a request it wrote just before is applied by Redis by now
    held = await held_by(raw, prefix, frozen.pid)  # frozen: this is exactly what it will try to commit
    assert held, "the dispatcher held nothing when it was frozen"
    runs_before = await counts(raw, prefix, "runs")

    rescuer = fleet.dispatcher()
    await eventually(lambda: _gone(raw, prefix, frozen.pid), timeout=15)  # the reaper took it back
    recovered_after = time.monotonic() - stopped_at

    # The rescuer re-runs the recovered tasks to the end and commits them before the frozen one thaws.
    async def redone() -> bool:
        runs = await counts(raw, prefix, "runs")
        return all(
            runs.get(_task_key(item), 0) > runs_before.get(_task_key(item), 0) for item in held if item[0] == "t"
        )

    await eventually(redone, timeout=20)
    await asyncio.sleep(TASK_SECONDS + 0.5)
    os.kill(frozen.pid, signal.SIGCONT)
    frozen_for = time.monotonic() - stopped_at

    rejected = await eventually(
        lambda: len(fleet.log_events_matching(frozen, "commit rejected")) >= len(held), timeout=20
    )
    assert rejected
    found = await wait_finished(raw, prefix, ids, timeout=60)
    assert set(found.values()) == {"COMPLETED"}, found
    stale_logged = len(fleet.log_events_matching(frozen, "commit rejected"))
    stale_metric = scrape(port, "bdurable_stale_commits_total")
    assert stale_logged == len(held), f"held {len(held)} items at the freeze, {stale_logged} commits rejected"
    assert stale_metric == stale_logged
    assert frozen.poll() is None, "the thawed dispatcher exited"
    assert rescuer.poll() is None

    audits = await audit_all(raw, prefix, ids)
    problems = {a.workflow_id: a.problems for a in audits if a.problems}
    assert not problems, problems
    for a in audits:
        assert len(a.kinds("task")) == 5
        assert sorted(e["seq"] for e in a.inbox) == a.kinds("task")  # one result per call, never two
        assert a.output["receipt"] == f"receipt:{a.workflow_id}:4"
    assert await leftovers(raw, prefix) == {}
    runs = await counts(raw, prefix, "runs")
    report(
        "frozen_dispatcher",
        {
            "held_when_frozen": len(held),
            "held_tasks": sum(1 for item in held if item[0] == "t"),
            "stale_commits_logged": stale_logged,
            "stale_commits_metric": stale_metric,
            "seconds_frozen": round(frozen_for, 1),
            "seconds_to_recover_held_work": round(recovered_after, 2),
            "task_re_executions": sum(runs.values()) - WORKFLOWS * 5,
        },
    )


def _task_key(item: str) -> str:
    """A task item -> the ``<workflow id>:<n>`` key the fault app counts runs under."""
    task = WorkItem.decode(item)
    return f"{task.workflow_id}:{(task.seq + 1) // 2}"  # tasks are calls 1, 3, 5, 7, 9 (a signal follows each)


async def _gone(raw: aioredis.Redis, prefix: str, pid: int) -> bool:
    return not await held_by(raw, prefix, pid)
