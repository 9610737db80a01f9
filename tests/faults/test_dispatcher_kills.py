"""Dispatchers SIGKILLed at random under load: nothing lost, no step committed twice, final effects once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter, defaultdict
from typing import cast

import fault_app
import pytest
import redis.asyncio as aioredis
from faultkit import Fleet, audit_all, counts, fx, held_by, leftovers, report, text_hash, wait_finished
from support import eventually

from bdurable import Client, Settings
from bdurable.keys import Keys

WORKFLOWS = 200
TASKS = 5
TASK_SECONDS = 1.0
KILL_EVERY = 2.0
KILL_FOR = 26.0


async def _firehose(r: aioredis.Redis, prefix: str, seen: list[tuple[str, str, int]]) -> None:
    """Every signal published on the prefix's firehose channel, as (workflow id, name, seq)."""
    pubsub = r.pubsub()
    await pubsub.subscribe(Keys(prefix).signals_channel)
    try:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                body = json.loads(message["data"])
                seen.append((body["workflow_id"], body["signal"]["name"], body["signal"]["seq"]))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


@pytest.mark.timeout(180)
async def test_random_dispatcher_kills_lose_nothing_and_commit_each_step_once(
    fleet: Fleet, client: Client, raw: aioredis.Redis, settings: Settings
) -> None:
    prefix = settings.prefix
    seed = int(os.environ.get("BDURABLE_FAULT_SEED", str(time.time_ns() % 1_000_000)))
    rng = random.Random(seed)
    fleet.support_roles()
    for _ in range(3):
        fleet.dispatcher()
    published: list[tuple[str, str, int]] = []
    listener = asyncio.create_task(_firehose(raw, prefix, published))
    await asyncio.sleep(0.3)  # subscribed before the first signal

    try:
        await _kill_and_check(fleet, client, raw, prefix, rng, seed, published)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def _kill_and_check(
    fleet: Fleet,
    client: Client,
    raw: aioredis.Redis,
    prefix: str,
    rng: random.Random,
    seed: int,
    published: list[tuple[str, str, int]],
) -> None:
    ids = [f"kill-{i:03d}" for i in range(WORKFLOWS)]
    began = time.monotonic()
    await asyncio.gather(*(client.start(fault_app.five_steps, {"delay": TASK_SECONDS}, workflow_id=wf) for wf in ids))

    killed_pids: set[int] = set()
    held_at_kill: list[int] = []
    while time.monotonic() - began < KILL_FOR:
        await asyncio.sleep(KILL_EVERY + rng.uniform(-0.5, 0.5))
        victim = rng.choice(fleet.dispatchers)
        fleet.kill(victim)
        killed_pids.add(victim.pid)
        # What it held (claimed, not committed): its processing hash stays until the reaper takes it.
        held_at_kill.append(len(await held_by(raw, prefix, victim.pid)))
        fleet.dispatcher()  # capacity stays at three
        if all(s == "COMPLETED" for s in (await wait_finished(raw, prefix, ids, timeout=0)).values()):
            break
    killing_ended = time.monotonic()

    found = await wait_finished(raw, prefix, ids, timeout=90)
    finished = time.monotonic()
    not_done = {wf: s for wf, s in found.items() if s != "COMPLETED"}
    assert not not_done, f"{len(not_done)} workflows did not complete: {dict(list(not_done.items())[:5])}"

    # Exactly-once commits: per workflow, 5 task calls each done once, 5 signals each logged once.
    audits = await audit_all(raw, prefix, ids)
    problems = {a.workflow_id: a.problems for a in audits if a.problems}
    assert not problems, f"exactly-once violations: {dict(list(problems.items())[:5])}"
    for a in audits:
        tasks, signals = a.kinds("task"), a.kinds("signal")
        assert len(tasks) == TASKS, (a.workflow_id, a.calls)
        assert all(a.calls[s]["s"] == "done" for s in tasks), (a.workflow_id, a.calls)
        assert [s["name"] for s in a.signals] == ["progress"] * 4 + ["done"], (a.workflow_id, a.signals)
        assert len(signals) == 5
        assert sorted(e["seq"] for e in a.inbox) == tasks
        assert a.output == {
            "results": [f"{a.workflow_id}:{n}" for n in range(1, 5)],
            "receipt": f"receipt:{a.workflow_id}:4",
        }

    # Side effects: every task ran; a task ran again only after a kill hit the process running it.
    runs = await counts(raw, prefix, "runs")
    assert set(runs) == {f"{wf}:{n}" for wf in ids for n in range(1, TASKS + 1)}
    runlog: dict[str, list[int]] = defaultdict(list)
    for entry in cast(list[str], await raw.lrange(fx(prefix, "runlog"), 0, -1)):
        key, _, pid = entry.rpartition(":")
        runlog[key].append(int(pid))
    unexplained = {k: pids for k, pids in runlog.items() if not set(pids[:-1]) <= killed_pids}
    assert not unexplained, f"tasks re-ran although no kill hit them: {dict(list(unexplained.items())[:5])}"
    re_executions = sum(runs.values()) - WORKFLOWS * TASKS

    # The final side effect: applied once per workflow (idempotency key), and its signal published once.
    final = await text_hash(raw, fx(prefix, "final"))
    assert set(final) == set(ids)
    final_runs = await counts(raw, prefix, "final_runs")

    await eventually(lambda: sum(1 for _, name, _ in published if name == "done") >= WORKFLOWS, timeout=10)
    done_signals = Counter(wf for wf, name, _ in published if name == "done")
    assert set(done_signals) == set(ids)
    assert set(done_signals.values()) == {1}, "a final signal was published twice"
    assert max(Counter(published).values()) == 1, "a signal was published twice"

    assert await leftovers(raw, prefix) == {}
    assert sum(1 for h in held_at_kill if h) >= 3, f"too few kills hit work in flight: {held_at_kill}"

    reaped = fleet.events("dead dispatchers reaped")
    stale = len(fleet.events("commit rejected"))
    report(
        "dispatcher_kills",
        {
            "seed": seed,
            "workflows": WORKFLOWS,
            "tasks": WORKFLOWS * TASKS,
            "kills": len(held_at_kill),
            "items_held_at_kills": sum(held_at_kill),
            "held_per_kill": held_at_kill,
            "reaped_steps": sum(int(e.get("steps", 0)) for e in reaped),
            "reaped_tasks": sum(int(e.get("tasks", 0)) for e in reaped),
            "task_re_executions": re_executions,
            "final_task_restarts": sum(v for k, v in runs.items() if k.endswith(f":{TASKS}")) - WORKFLOWS,
            "final_effect_completed_twice": sum(final_runs.values()) - WORKFLOWS,
            "stale_commits": stale,
            "lost": 0,
            "duplicate_commits": 0,
            "seconds_total": round(finished - began, 1),
            "seconds_after_last_kill": round(finished - killing_ended, 1),
        },
    )
