"""A workflow that continues as new a thousand times survives its dispatcher being SIGKILLed right after a
continue-as-new commit (at the crash point ``after_commit``): another dispatcher takes the next run over, and
the loop ends with the right count, in its thousandth run, with only that run's history."""

from __future__ import annotations

import entity_app
import pytest
from support import InProcessRoles, RoleProcesses, eventually

from bdurable import Client


@pytest.mark.timeout(180)
async def test_a_thousand_runs_survive_a_sigkill_between_two_runs(
    client: Client, roles: InProcessRoles, processes: RoleProcesses
) -> None:
    roles.scheduler()
    roles.signal_bus()
    reaper = roles.reaper()
    # Each run commits twice: its first step, then its task together with its last step (the continue-as-new,
    # run right after the task on the same dispatcher). The 200th commit is run 100's continue-as-new.
    doomed = processes.start("dispatcher", "--app", "entity_app", BDURABLE_CRASH_AT="after_commit:200")
    await eventually(lambda: client.reads.registered_versions("counting_loop"), timeout=20)
    handle = await client.start(entity_app.counting_loop, {"count": 0, "runs": 1000}, workflow_id="loop")
    await eventually(lambda: doomed.poll() is not None, timeout=60)
    assert doomed.returncode == 137, processes.log_of(doomed)
    state = await client.get_state("loop")
    assert state is not None
    assert state.run == 101  # it died right after committing run 100's continue-as-new
    roles.dispatcher(entity_app)
    assert await handle.result(timeout=120) == {"count": 1000}
    assert (reaper.sample("bdurable_reaped_workers_total") or 0) >= 1
    state = await client.get_state("loop")
    assert state is not None
    assert state.run == 1000
    assert [(h.kind, h.name) for h in await client.history("loop")] == [("task", "entity.bump")]
