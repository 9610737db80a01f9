"""Poison work that kills the dispatcher running it (it never raises): a poison task is dead-lettered
after ``max_attempts`` crashed attempts, a poison workflow step fails its workflow after 5 crashed
dispatchers, and every other workflow completes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import fault_app
import pytest
import redis.asyncio as aioredis
from faultkit import Fleet, audit_all, counts, leftovers, report, shard, text_hash, wait_finished

from bdurable import Client, Settings

DISPATCHERS = 2
BYSTANDERS = 30


class Supervisor:
    """Keeps DISPATCHERS dispatchers running, as an orchestrator restarts crashed pods; counts deaths."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.deaths = 0

    async def run(self) -> None:
        while True:
            for process in list(self.fleet.dispatchers):
                if process.poll() is not None:
                    self.fleet.dispatchers.remove(process)
                    self.deaths += 1
            while len(self.fleet.dispatchers) < DISPATCHERS:
                self.fleet.dispatcher()
            await asyncio.sleep(0.1)


@pytest.fixture
async def supervisor(fleet: Fleet) -> AsyncIterator[Supervisor]:
    fleet.support_roles()
    supervising = Supervisor(fleet)
    running = asyncio.create_task(supervising.run())
    try:
        yield supervising
    finally:
        running.cancel()


async def _start_with_bystanders(client: Client, poison: Any, poison_id: str) -> list[str]:
    """The poison workflow started in the middle of a backlog of ordinary five-step workflows."""
    others = [f"bystander-{i:02d}" for i in range(BYSTANDERS)]
    for wf in others[: BYSTANDERS // 2]:
        await client.start(fault_app.five_steps, {"delay": 0.3}, workflow_id=wf)
    await client.start(poison, {}, workflow_id=poison_id)
    for wf in others[BYSTANDERS // 2 :]:
        await client.start(fault_app.five_steps, {"delay": 0.3}, workflow_id=wf)
    return others


async def _bystanders_unaffected(client: Client, raw: aioredis.Redis, prefix: str, found: dict[str, Any]) -> int:
    """Every bystander completed, exactly once; returns how many of their task runs were re-executions."""
    others = [wf for wf in found if wf.startswith("bystander-")]
    failed = {}
    for wf in others:
        if found[wf] != "COMPLETED":
            state = await client.get_state(wf)
            failed[wf] = (found[wf], state and state.error and state.error.get("type"))
    assert not failed, f"{len(failed)} of {len(others)} bystanders did not complete: {failed}"
    audits = await audit_all(raw, prefix, others)
    problems = {a.workflow_id: a.problems for a in audits if a.problems}
    assert not problems, problems
    assert all(a.output["receipt"] == f"receipt:{a.workflow_id}:4" for a in audits)
    assert await leftovers(raw, prefix) == {}
    runs = await counts(raw, prefix, "runs")
    return sum(v for k, v in runs.items() if k.startswith("bystander-")) - 5 * len(others)


@pytest.mark.timeout(120)
async def test_poison_task_is_dead_lettered_after_max_attempts_others_complete(
    supervisor: Supervisor, client: Client, raw: aioredis.Redis, settings: Settings
) -> None:
    prefix, t = settings.prefix, shard(settings.prefix)
    began = time.monotonic()
    others = await _start_with_bystanders(client, fault_app.poison_task_flow, "poison-task")
    found = await wait_finished(raw, prefix, ["poison-task", *others], timeout=90)
    settled = time.monotonic() - began

    # 3 counted attempts (max_attempts), each killed its dispatcher; the workflow got TaskFailedError. A crash
    # while the dispatcher also held other work is not blamed on the task (it may not be its fault), so the
    # poison can run once or twice more than max_attempts before it is caught running on its own.
    assert found["poison-task"] == "COMPLETED", await client.get_state("poison-task")
    outcome = await client.result("poison-task", timeout=1)
    assert outcome == {"task_name": "fault_app.poison", "attempts": 3, "error_type": "WorkerLostError"}
    assert 3 <= (await counts(raw, prefix, "runs"))["poison-task:1"] <= 5
    entries = cast(list[str], await raw.zrange(t.dlq, 0, -1))
    assert len(entries) == 1, entries
    entry = await text_hash(raw, t.dlq_entry(entries[0]))
    assert (entry["workflow_id"], entry["task"], entry["attempts"]) == ("poison-task", "fault_app.poison", "3")
    error = json.loads(entry["error"])
    assert error["type"] == "WorkerLostError"
    assert "died" in error["message"]
    assert 3 <= supervisor.deaths <= 5  # one death per run of the poison task (see above)

    re_executions = await _bystanders_unaffected(client, raw, prefix, found)
    report(
        "poison_task",
        {
            "dispatcher_deaths": supervisor.deaths,
            "dlq_entries": len(entries),
            "bystanders": len(others),
            "bystander_task_re_executions": re_executions,
            "seconds_to_settle": round(settled, 1),
        },
    )


@pytest.mark.timeout(120)
async def test_poison_step_fails_its_workflow_after_5_crashes_others_complete(
    supervisor: Supervisor, client: Client, raw: aioredis.Redis, settings: Settings
) -> None:
    prefix = settings.prefix
    began = time.monotonic()
    others = await _start_with_bystanders(client, fault_app.poison_step_flow, "poison-step")
    found = await wait_finished(raw, prefix, ["poison-step", *others], timeout=90)
    settled = time.monotonic() - began

    assert found["poison-step"] == "FAILED"
    state = await client.get_state("poison-step")
    assert state is not None
    assert state.error is not None
    assert state.error["type"] == "PoisonStepError"
    assert "5 times" in state.error["message"]
    assert supervisor.deaths >= 5

    re_executions = await _bystanders_unaffected(client, raw, prefix, found)
    report(
        "poison_step",
        {
            "dispatcher_deaths": supervisor.deaths,
            "bystanders": len(others),
            "bystander_task_re_executions": re_executions,
            "seconds_to_settle": round(settled, 1),
        },
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("one_attempt", "task_runs"), [(False, 2), (True, 1)], ids=["retryable", "one-attempt"])
async def test_poison_step_after_a_task_is_blamed_on_the_step_not_the_task(
    supervisor: Supervisor, client: Client, raw: aioredis.Redis, settings: Settings, one_attempt: bool, task_runs: int
) -> None:
    """A step run right after its task, to commit with it, dies with the task's attempt: the attempt is lost,
    its retry runs on a dispatcher without that copy of the run and commits on its own, and the step is then
    caught as the poison, as any poison step is. On a task's last attempt (here its only one) the step never
    runs with it, since a lost last attempt would fail a task that succeeded. Alone in the fleet, so the task
    is handed to the dispatcher that ran the first step, which holds its run."""
    prefix, t = settings.prefix, shard(settings.prefix)
    await client.start(fault_app.poison_after_task_flow, {"one_attempt": one_attempt}, workflow_id="poison-after-task")
    found = await wait_finished(raw, prefix, ["poison-after-task"], timeout=90)

    assert found["poison-after-task"] == "FAILED"
    state = await client.get_state("poison-after-task")
    assert state is not None
    assert state.error is not None
    assert state.error["type"] == "PoisonStepError", state.error
    # retryable: the task ran once with the step that followed it (lost with it), then once more on its own
    assert (await counts(raw, prefix, "runs"))["poison-after-task:1"] == task_runs
    [entry] = await client.history("poison-after-task")
    assert (entry.kind, entry.status, entry.result) == ("task", "done", "poison-after-task:1")
    assert await raw.zcard(t.dlq) == 0  # nothing dead-lettered: the task never failed
    assert supervisor.deaths >= 4 + task_runs  # a lost attempt (retryable), then the five crashes of the step
