"""Every crash point of the dispatcher, at every passage, over the example workflows.

For each crash point (after_claim, in_task, before_commit, after_commit) and each passage n = 1, 2, ...,
a dispatcher started with ``BDURABLE_CRASH_AT=point:n`` runs one workflow (``examples.order`` with its
payment child, its approval event and its signals; ``examples.onboarding`` with a short welcome delay;
``examples.payouts`` with its limited tasks and its workflow slot) until it dies at that passage; then a
normal dispatcher takes over (scheduler, reaper and signal bus run all along). The walk over n stops at the
first n the run never reaches. Every combination must end with the workflow's right output, each durable
call committed once, each signal emitted once, and no permit, slot or held call left behind.

Combinations run in three lanes at once, each lane on its own prefix with its own scheduler, reaper and
signal bus (in this process, as is the taking-over dispatcher; the crashing one is a real process).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from faultkit import REPO, audit, leftovers, report, statuses
from support import APPS, RoleProcesses

from bdurable import Client, Settings, Worker
from bdurable.embedded import RedisServer
from bdurable.runtime.faults import CRASH_POINTS

LANES = 3
RUN_TIMEOUT = 40.0
WORKFLOWS = ("order", "onboarding", "payouts")


@dataclass
class Outcome:
    workflow: str
    point: str
    n: int
    crashed: bool
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    recovery_seconds: float | None = None


class Lane:
    """One prefix with its own scheduler, reaper and signal bus, running one combination at a time."""

    def __init__(self, redis_server: RedisServer, tmp_path: Path) -> None:
        self.settings = Settings(
            redis_url=redis_server.url,
            prefix=f"t{uuid.uuid4().hex[:10]}",
            heartbeat_interval=0.2,
            heartbeat_timeout=1.0,
        )
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.processes = RoleProcesses(self.settings, tmp_path)
        self.support = Worker(settings=self.settings, roles=("scheduler", "reaper", "signal_bus"))
        self.client = Client(settings=self.settings)
        self.raw = aioredis.Redis.from_url(self.settings.redis_url, decode_responses=True)

    async def __aenter__(self) -> Lane:
        await self.client.connect()
        await self.support.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.processes.stop_all()
        await self.support.stop(timeout=30)
        await self.client.close()
        await self.raw.aclose()

    async def run(self, workflow: str, point: str, n: int) -> Outcome:
        import examples.onboarding
        import examples.order
        import examples.payouts

        began = time.monotonic()
        crashing = self.processes.start(
            "dispatcher", "--app", "examples.order", "--app", "examples.onboarding", "--app", "examples.payouts",
            "--concurrency", "10",
            BDURABLE_CRASH_AT=f"{point}:{n}",
            PYTHONPATH=os.pathsep.join([str(REPO), str(APPS)]),
        )  # fmt: skip
        wf = f"{workflow}-{point}-{n}"
        if workflow == "order":
            order = examples.order.Order(order_id=wf, amount=1250, customer="ada")
            await self.client.start(examples.order.process_order, order, workflow_id=wf)
        elif workflow == "onboarding":
            payload = {"email": f"{wf}@example.com", "welcome_delay": "300ms"}
            await self.client.start(examples.onboarding.user_onboarding, payload, workflow_id=wf)
        else:
            await self.client.start(examples.payouts.payout, {"account": wf, "cents": 700}, workflow_id=wf)

        taking_over: Worker | None = None
        event_sent = False
        crashed_at: float | None = None
        status: str | None = None
        try:
            while time.monotonic() - began < RUN_TIMEOUT:
                status = (await statuses(self.raw, self.settings.prefix, [wf]))[wf]
                if status in ("COMPLETED", "FAILED", "CANCELLED"):
                    break
                if status == "AWAITING_EVENT" and not event_sent:
                    await self.client.send_event(wf, "order.approved", {"approver_id": "u7"})
                    event_sent = True
                if crashing.poll() is not None and taking_over is None:
                    crashed_at = time.monotonic()
                    modules = [examples.order, examples.onboarding, examples.payouts]
                    taking_over = Worker(modules, settings=self.settings, roles=("dispatcher",), concurrency=10)
                    await taking_over.start()
                await asyncio.sleep(0.03)
        finally:
            if crashing.poll() is None:
                crashing.kill()
                crashing.wait(10)
            if taking_over is not None:
                await taking_over.stop(timeout=30)
        finished = time.monotonic()
        crashed = crashing.returncode == 137
        outcome = Outcome(workflow, point, n, crashed, seconds=round(finished - began, 2))
        if crashed_at is not None:
            outcome.recovery_seconds = round(finished - crashed_at, 2)
        if crashing.returncode not in (137, -9):
            outcome.problems.append(f"the crashing dispatcher exited {crashing.returncode}")
        if crashed and "crash point" not in self.processes.log_of(crashing):
            outcome.problems.append("exit 137 without the crash point's note")
        outcome.problems += await self._check(workflow, wf, status)
        return outcome

    async def _check(self, workflow: str, wf: str, status: str | None) -> list[str]:
        if status != "COMPLETED":
            return [f"status {status} after {RUN_TIMEOUT:g}s"]
        prefix = self.settings.prefix
        a = await audit(self.raw, prefix, wf)
        problems = list(a.problems)
        if workflow == "order":
            expected: Any = {"status": "shipped", "tracking": f"TRACK-{wf}-ADA", "approved_by": "u7"}
            kinds = ["signal", "child", "signal", "event", "task", "signal"]
            signals: list[tuple[str, str | None]] = [
                ("status.update", "received"),
                ("status.update", "paid"),
                ("status.update", "shipped"),
            ]
        elif workflow == "onboarding":
            expected = f"sent to {wf}@example.com: Welcome!"
            kinds = ["sleep", "task", "signal"]
            signals = [("onboarding.done", None)]
        else:
            expected = {"receipt": f"tr-{wf}-700", "entry": f"ledger-{wf}:-700"}
            kinds = ["task", "task"]
            signals = []
        if a.output != expected:
            problems.append(f"output {a.output!r}, expected {expected!r}")
        recorded = [a.calls[seq]["rec"].get("k") for seq in sorted(a.calls)]
        if recorded != kinds:
            problems.append(f"calls {recorded}, expected {kinds}")
        not_done = {seq: c["s"] for seq, c in a.calls.items() if c["s"] != "done"}
        if not_done:
            problems.append(f"calls not done: {not_done}")
        got = [(s["name"], (s.get("payload") or {}).get("status")) for s in a.signals]
        if got != signals:
            problems.append(f"signals {got}, expected {signals}")
        if workflow == "order":
            [child_seq] = a.kinds("child")
            child = await audit(self.raw, prefix, a.calls[child_seq]["rec"]["id"])
            problems += [f"child: {p}" for p in child.problems]
            if (child.status, child.output) != ("COMPLETED", f"ch_{wf}"):
                problems.append(f"child ended {child.status} with {child.output!r}")
            if [c["s"] for c in child.calls.values()] != ["done"]:
                problems.append(f"child calls {child.calls}")
        left = await leftovers(self.raw, prefix)
        if left:
            problems.append(f"left over: {left}")
        return problems


async def _walk(lane: Lane, workflow: str, point: str, outcomes: list[Outcome]) -> None:
    """n = 1, 2, ... until the run never reaches the n-th passage of the point."""
    n = 1
    while True:
        outcome = await lane.run(workflow, point, n)
        outcomes.append(outcome)
        if not outcome.crashed or n >= 30:
            return
        n += 1


@pytest.mark.timeout(300)
async def test_every_crash_point_at_every_passage_keeps_every_guarantee(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    began = time.monotonic()
    walks: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for point in ("after_commit", "before_commit", "after_claim", "in_task"):  # longest walks first
        for workflow in WORKFLOWS:
            walks.put_nowait((workflow, point))
    assert set(CRASH_POINTS) == {point for _, point in walks._queue}  # type: ignore[attr-defined]
    outcomes: list[Outcome] = []

    async def lane_worker(index: int) -> None:
        async with Lane(redis_server, tmp_path / f"lane-{index}") as lane:
            while not walks.empty():
                workflow, point = walks.get_nowait()
                await _walk(lane, workflow, point, outcomes)

    await asyncio.gather(*(lane_worker(i) for i in range(LANES)))
    elapsed = time.monotonic() - began

    crashes = [o for o in outcomes if o.crashed]
    per_walk: dict[str, int] = {}
    for o in crashes:
        per_walk[f"{o.workflow}/{o.point}"] = per_walk.get(f"{o.workflow}/{o.point}", 0) + 1
    failed = [o for o in outcomes if o.problems]
    recoveries = sorted(o.recovery_seconds for o in crashes if o.recovery_seconds is not None)
    figures = {
        "combinations_enumerated": len(crashes),
        "runs_including_the_unreached_passage": len(outcomes),
        "crashes_per_workflow_and_point": dict(sorted(per_walk.items())),
        "failed": [f"{o.workflow}/{o.point}:{o.n}: {o.problems}" for o in failed],
        "median_seconds_crash_to_completion": recoveries[len(recoveries) // 2] if recoveries else None,
        "max_seconds_crash_to_completion": recoveries[-1] if recoveries else None,
        "seconds": round(elapsed, 1),
    }
    report("crash_points", figures)
    print(f"crash points: {len(crashes)} (point, n) combinations enumerated, {len(failed)} failed")
    assert not failed, "\n".join(figures["failed"])  # type: ignore[arg-type]
    for workflow in WORKFLOWS:
        for point in CRASH_POINTS:
            assert per_walk.get(f"{workflow}/{point}", 0) >= 1, f"{workflow} never reached {point}"
    # Every durable step of the examples was covered: each commit and each claim of each item.
    # A step that runs right after its task commits with it (one commit for both; a crash at before_commit
    # then falls after that step ran).
    assert per_walk["order/before_commit"] >= 6  # 4 parent steps, 2 child steps, 2 tasks (each with a step)
    assert per_walk["onboarding/before_commit"] >= 3  # 3 steps, 1 task (with a step)
    assert per_walk["payouts/before_commit"] >= 3  # 3 steps, 2 limited tasks (each with a step)
