"""A fleet-wide concurrency limit under a SIGKILL: 200 calls of a task limited to 5 at once, from 4 dispatcher
processes, one of them killed mid-run. Sampled from Redis (what the dispatchers hold), not from the tasks: never
more than 5 at once, every call completes, and the dead dispatcher's permits come back (none leak)."""

from __future__ import annotations

import os
import signal

import limits_app
import pytest
from support import HeldSampler, InProcessRoles, RoleProcesses, eventually, held_by_dispatchers

from bdurable import Client


@pytest.mark.timeout(120)
async def test_concurrency_five_holds_through_a_sigkill(
    client: Client, roles: InProcessRoles, processes: RoleProcesses
) -> None:
    roles.scheduler()
    roles.signal_bus()
    reaper = roles.reaper()
    dispatchers = [processes.start("dispatcher", "--app", "limits_app", "--concurrency", "50") for _ in range(4)]
    await eventually(lambda: client.reads.registered_versions("capped_flow"), timeout=20)
    handles = [await client.start(limits_app.capped_flow, {"calls": 50, "hold": 0.05}) for _ in range(4)]
    async with HeldSampler(client, "limits.capped") as sampler:
        await eventually(lambda: sampler.samples and sampler.samples[-1] >= 5, timeout=20)  # saturated
        victim = dispatchers[0]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        for handle in handles:
            assert await handle.result(timeout=90) == list(range(50))
    assert max(sampler.samples) <= 5, max(sampler.samples)
    # The dead dispatcher is recovered (its heartbeat lapses within a second) ...
    await eventually(lambda: (reaper.sample("bdurable_reaped_workers_total") or 0) >= 1, timeout=10)
    held, permits = await held_by_dispatchers(client, "limits.capped")
    assert (held, permits) == (0, 0)  # ... and no permit leaked with it
