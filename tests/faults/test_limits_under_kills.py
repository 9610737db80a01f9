"""A fleet-wide concurrency limit under a SIGKILL: 200 calls of a task limited to 5 at once, from 4 dispatcher
processes, one of them killed mid-run. Sampled from Redis (what the dispatchers hold), not from the tasks: never
more than 5 at once, every call completes, and the dead dispatcher's permits come back (none leak)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import limits_app
import pytest
from support import HeldSampler, InProcessRoles, RoleProcesses, eventually, held_by_dispatchers, within

from bdurable import Client
from bdurable.limits import limit_id


@pytest.mark.timeout(120)
async def test_concurrency_five_holds_through_a_sigkill(
    client: Client, roles: InProcessRoles, processes: RoleProcesses
) -> None:
    roles.scheduler()
    roles.signal_bus()
    reaper = roles.reaper()
    dispatchers = {p.pid: p for p in (processes.start("dispatcher", "--app", "limits_app", "--concurrency", "50")
                                      for _ in range(4))}  # fmt: skip
    await eventually(lambda: live_dispatchers(client, 4), timeout=30)  # all four serve before the load starts
    handles = [await client.start(limits_app.capped_flow, {"calls": 50, "hold": 0.05}) for _ in range(4)]
    async with HeldSampler(client, "limits.capped") as sampler:
        await eventually(lambda: sampler.samples and sampler.samples[-1] >= 5, timeout=20)  # saturated
        holder = await eventually(lambda: dispatcher_holding(client, "limits.capped"), timeout=20)
        victim = dispatchers[pid_of(holder)]  # killed while it holds permits of the limit
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        try:
            results = await within(60, asyncio.gather(*(h.result() for h in handles)))
        except TimeoutError:
            pytest.fail(f"the workflows did not finish within 60 s: {await _diagnosis(client, handles, processes)}")
        assert results == [list(range(50))] * 4
    assert max(sampler.samples) <= 5, max(sampler.samples)
    # The dead dispatcher is recovered (its heartbeat lapses within a second) ...
    await eventually(lambda: (reaper.sample("bdurable_reaped_workers_total") or 0) >= 1, timeout=10)
    assert holder not in {d.worker_id for d in await client.reads.dispatchers() if d.alive}
    held, permits = await held_by_dispatchers(client, "limits.capped")
    assert (held, permits) == (0, 0)  # ... and no permit leaked with it


async def _diagnosis(client: Client, handles: list[Any], processes: RoleProcesses) -> str:
    """What a stuck run looks like from Redis and the role logs, so that a failure explains itself."""
    states = [await client.get_state(h.workflow_id) for h in handles]
    shard = client.keys.shard(0)
    redis = client.store.redis
    sizes: dict[str, int] = {}  # the shard's queues, held-back sets, timers, wake-up tokens (not per workflow)
    for key in await redis.keys(f"{shard.tag}:*"):
        kind = await redis.type(key)
        if kind in ("zset", "list") and not any(f":{part}:" in key for part in ("inbox", "signals", "idx")):
            sizes[key] = await (redis.zcard(key) if kind == "zset" else redis.llen(key))
    held = await held_by_dispatchers(client, "limits.capped")
    fleet = [(d.worker_id, d.alive) for d in await client.reads.dispatchers()]
    logs = "\n".join(processes.log_of(p)[-2000:] for p in processes.processes)
    return (
        f"states {[(s.status, s.step, s.waiting_on) if s else None for s in states]}; sizes {sizes}; "
        f"held/permits {held}; dispatchers {fleet}\n{logs}"
    )


async def live_dispatchers(client: Client, count: int) -> bool:
    return sum(d.alive for d in await client.reads.dispatchers()) >= count


async def dispatcher_holding(client: Client, task: str) -> str | None:
    """A dispatcher that holds an attempt of ``task`` now (with its permit), if any."""
    ident = limit_id("t", task, "")
    shard = client.keys.shard(client.keys.shard_of(ident))
    redis = client.store.redis
    permit_of = await redis.hgetall(shard.permit_of)
    workers: list[str] = await redis.zrange(shard.workers, 0, -1)
    for worker in workers:
        if any(permit_of.get(item) == ident for item in await redis.hkeys(shard.processing(worker))):
            return worker
    return None


def pid_of(worker_id: str) -> int:
    """The process id in a worker id (``role-host-pid-suffix``)."""
    return int(worker_id.rsplit("-", 2)[-2])
