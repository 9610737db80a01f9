"""Redis restarted mid-load (AOF, appendfsync always) and Redis unreachable for 10 s: every role rides
it out (reconnects with backoff, never exits, never spins), no workflow is lost, nothing runs twice."""

from __future__ import annotations

import asyncio
import time

import fault_app
import pytest
from faultkit import OwnRedis, audit_all, counts, cpu_seconds, fx, leftovers, report, text_hash, wait_finished
from redis.exceptions import ConnectionError as RedisConnectionError
from support import eventually

OUTAGE_SECONDS = 10.0
MAX_CPU_SECONDS = 1.5


async def _runs(o: OwnRedis) -> int:
    """Task runs so far (retried through the test client's own reconnection after a restart)."""
    for _ in range(50):
        try:
            return sum((await counts(o.raw, o.settings.prefix, "runs")).values())
        except RedisConnectionError:
            await asyncio.sleep(0.1)
    raise AssertionError("Redis did not answer the test")


async def _at_least(o: OwnRedis, runs: int) -> bool:
    return await _runs(o) >= runs


async def _progress_after(o: OwnRedis, since: int, timeout: float = 30) -> float:
    """Seconds until a task runs again (the fleet works again after the outage)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if await _runs(o) > since:
            return time.monotonic() - began
        await asyncio.sleep(0.05)
    raise AssertionError(f"no task ran within {timeout}s after Redis came back")


async def _start_load(o: OwnRedis, ids: list[str], delay: float) -> None:
    o.fleet.support_roles()
    for _ in range(2):
        o.fleet.dispatcher()
    await asyncio.gather(*(o.client.start(fault_app.five_steps, {"delay": delay}, workflow_id=wf) for wf in ids))


async def _check_all_done(o: OwnRedis, ids: list[str], *, sleepers: list[str] = ()) -> None:  # type: ignore[assignment]
    prefix = o.settings.prefix
    found = await wait_finished(o.raw, prefix, [*ids, *sleepers], timeout=60)
    assert set(found.values()) == {"COMPLETED"}, {k: v for k, v in found.items() if v != "COMPLETED"}
    audits = await audit_all(o.raw, prefix, [*ids, *sleepers])
    problems = {a.workflow_id: a.problems for a in audits if a.problems}
    assert not problems, problems
    for a in audits:
        if a.workflow_id in ids:
            assert len(a.kinds("task")) == 5
            assert len(a.signals) == 5
            assert a.output["receipt"] == f"receipt:{a.workflow_id}:4"
        else:
            assert a.output == f"{a.workflow_id}:1"
    assert set(await text_hash(o.raw, fx(prefix, "final"))) == set(ids)
    assert await leftovers(o.raw, prefix) == {}


@pytest.mark.timeout(120)
async def test_redis_restarted_mid_load_loses_nothing(own_redis: OwnRedis) -> None:
    o = own_redis
    ids = [f"restart-{i:03d}" for i in range(100)]
    await _start_load(o, ids, delay=0.3)
    await eventually(lambda: _at_least(o, 150), timeout=30)  # about a third of the 500 tasks have started

    o.server.kill()  # SIGKILL: what was acknowledged is in the AOF (fsync always)
    await asyncio.sleep(1.0)
    o.server.start()
    runs_at_restart = await _runs(o)
    resumed_after = await _progress_after(o, runs_at_restart)

    await _check_all_done(o, ids)
    assert all(p.poll() is None for p in o.fleet.processes.processes), "a role exited"
    reaps = o.fleet.events("dead dispatchers reaped")
    assert not reaps, f"live dispatchers were reaped after the restart (outage amnesia): {reaps}"
    report(
        "redis_restart",
        {
            "workflows": len(ids),
            "runs_at_restart": runs_at_restart,
            "seconds_down": 1.0,
            "seconds_to_resume": round(resumed_after, 2),
            "task_re_executions": await _runs(o) - 5 * len(ids),
            "lost": 0,
        },
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["killed", "frozen"])
async def test_redis_unreachable_for_10s_no_role_exits_or_spins(own_redis: OwnRedis, how: str) -> None:
    o = own_redis
    ids = [f"outage-{i:02d}" for i in range(40)]
    sleepers = [f"outage-sleeper-{i}" for i in range(5)]
    await _start_load(o, ids, delay=0.5)
    for wf in sleepers:  # timers that fall due in the middle of the outage
        await o.client.start(fault_app.sleeper, {"seconds": 3.0}, workflow_id=wf)
    await eventually(lambda: _at_least(o, 40), timeout=30)

    roles = list(o.fleet.alive())
    before = {p.pid: cpu_seconds(p.pid) for p in roles}
    if how == "killed":
        o.server.kill()  # connections refused
    else:
        o.freeze()  # connections accepted, never answered
    began = time.monotonic()
    with pytest.raises(TimeoutError, match=r"within 1s \(never read: Redis did not answer\)$"):
        await o.client.result(ids[0], timeout=1.0)  # a wait through the outage ends at its timeout, and says why
    await asyncio.sleep(OUTAGE_SECONDS - (time.monotonic() - began))
    spent = {p.pid: cpu_seconds(p.pid) - before[p.pid] for p in roles}
    exited = [p.args for p in roles if p.poll() is not None]
    if how == "killed":
        o.server.start()
    else:
        o.thaw()
    runs_after = await _runs(o)
    resumed_after = await _progress_after(o, runs_after)

    assert not exited, f"roles exited during the outage: {exited}"
    names = {p.pid: str(p.args[3]) for p in roles}  # type: ignore[index]
    spinning = {names[pid]: round(cpu, 2) for pid, cpu in spent.items() if cpu >= MAX_CPU_SECONDS}
    assert not spinning, f"CPU seconds spent during the {OUTAGE_SECONDS:g}s outage: {spinning}"
    await _check_all_done(o, ids, sleepers=sleepers)
    assert all(p.poll() is None for p in roles), "a role exited after the outage"
    reaps = o.fleet.events("dead dispatchers reaped")
    assert not reaps, f"live dispatchers were reaped after the outage (outage amnesia): {reaps}"
    report(
        f"redis_unreachable_{how}",
        {
            "seconds_down": OUTAGE_SECONDS,
            "cpu_seconds_during_outage": {f"{names[pid]}-{pid}": round(cpu, 2) for pid, cpu in spent.items()},
            "seconds_to_resume": round(resumed_after, 2),
            "task_re_executions": await _runs(o) - 5 * len(ids) - len(sleepers),
            "lost": 0,
        },
    )
