"""The example apps end to end: the four roles as real processes, driven through the public API only."""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Any

import pytest
from support import APPS, RoleProcesses, eventually, within

from bdurable import Client, Signal, Status, WorkflowCancelledError

ROOT = APPS.parent.parent  # the repository root, where `examples` lives
EXAMPLES = ("examples.order", "examples.onboarding", "examples.fanout", "examples.payouts")


async def fleet(client: Client, processes: RoleProcesses, *names: str) -> list[subprocess.Popen[bytes]]:
    """The four roles as processes, the dispatcher holding every example app; wait until it registered."""
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(APPS)])}
    apps = [arg for module in EXAMPLES for arg in ("--app", module)]
    started = [
        processes.start("dispatcher", *apps, **env),
        processes.start("scheduler", **env),
        processes.start("reaper", **env),
        processes.start("signal-bus", **env),
    ]
    redis = client.store.redis

    async def registered() -> bool:
        for process in started:
            assert process.poll() is None, processes.log_of(process)
        for name in names:
            if not await redis.zcard(client.keys.versions(name)):
                return False
        return True

    await eventually(registered, timeout=20, interval=0.05)
    return started


async def awaiting_event(client: Client, workflow_id: str) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and state.status == Status.AWAITING_EVENT


async def all_signals(client: Client, workflow_id: str) -> list[Signal]:
    async def gather() -> list[Signal]:
        return [s async for s in client.signals(workflow_id)]

    return await within(10, gather())


def order(order_id: str, **extra: Any) -> dict[str, Any]:
    return {"order_id": order_id, "amount": 4200, "customer": "ada", **extra}


async def test_order_approved_is_paid_and_shipped(client: Client, processes: RoleProcesses) -> None:
    await fleet(client, processes, "process_order")
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    handle = await client.start("process_order", order(order_id), workflow_id=order_id)
    await eventually(lambda: awaiting_event(client, order_id), timeout=10)
    state = await client.get_state(order_id)
    assert state is not None
    assert state.waiting_on is not None
    assert "order.approved" in state.waiting_on
    await client.send_event(order_id, "order.approved", {"approver_id": "u7"})
    out = await handle.result(timeout=10)
    assert out == {"status": "shipped", "tracking": f"TRACK-{order_id}-ADA", "approved_by": "u7"}
    signals = await all_signals(client, order_id)
    assert [s.payload["status"] for s in signals] == ["received", "paid", "shipped"]
    history = await client.history(order_id)
    assert [(h.kind, h.name, h.status) for h in history] == [
        ("signal", "status.update", "done"),
        ("child", "process_payment", "done"),
        ("signal", "status.update", "done"),
        ("event", "order.approved", "done"),
        ("task", "shipping.ship", "done"),
        ("signal", "status.update", "done"),
    ]
    child_id = f"{order_id}:2"
    child = await client.get_state(child_id)
    assert child is not None
    assert (child.status, child.parent_id, child.output) == (Status.COMPLETED, order_id, f"ch_{order_id}")


async def test_order_cancelled_while_awaiting_approval_is_refunded(client: Client, processes: RoleProcesses) -> None:
    await fleet(client, processes, "process_order")
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    await client.start("process_order", order(order_id), workflow_id=order_id)
    await eventually(lambda: awaiting_event(client, order_id), timeout=10)
    await client.cancel(order_id, reason="User requested cancellation")
    with pytest.raises(WorkflowCancelledError) as caught:
        await client.result(order_id, timeout=10)
    assert caught.value.reason == "User requested cancellation"
    state = await client.get_state(order_id)
    assert state is not None
    assert state.status == Status.CANCELLED
    signals = await all_signals(client, order_id)
    assert [s.payload["status"] for s in signals] == ["received", "paid", "cancelled"]
    assert signals[-1].payload["reason"] == "User requested cancellation"
    history = await client.history(order_id)
    assert [(h.kind, h.name, h.status) for h in history][3:] == [
        ("event", "order.approved", "cancelled"),
        ("task", "payments.refund", "done"),
        ("signal", "status.update", "done"),
    ]
    assert history[4].result == f"re_ch_{order_id}"


async def test_order_not_approved_in_time_expires_and_is_refunded(client: Client, processes: RoleProcesses) -> None:
    await fleet(client, processes, "process_order")
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    await client.start("process_order", order(order_id, approval_timeout="300ms"), workflow_id=order_id)
    out = await client.result(order_id, timeout=10)
    assert out == {"status": "expired", "charge_id": f"ch_{order_id}"}
    signals = await all_signals(client, order_id)
    assert [s.payload["status"] for s in signals] == ["received", "paid", "expired"]
    history = await client.history(order_id)
    assert [(h.kind, h.name, h.status) for h in history][3:5] == [
        ("event", "order.approved", "failed"),
        ("task", "payments.refund", "done"),
    ]


async def test_onboarding_sleeps_then_sends_the_welcome_email(client: Client, processes: RoleProcesses) -> None:
    await fleet(client, processes, "user_onboarding")
    handle = await client.start("user_onboarding", {"email": "ada@example.com", "welcome_delay": "300ms"})
    await eventually(
        lambda: _status(client, handle.workflow_id, Status.SLEEPING, Status.COMPLETED), timeout=10, interval=0.01
    )
    assert await handle.result(timeout=10) == "sent to ada@example.com: Welcome!"
    signals = await all_signals(client, handle.workflow_id)
    assert [(s.name, s.payload) for s in signals] == [("onboarding.done", {"email": "ada@example.com"})]
    history = await client.history(handle.workflow_id)
    assert [(h.kind, h.status) for h in history] == [("sleep", "done"), ("task", "done"), ("signal", "done")]
    assert history[0].started_at is not None
    assert history[0].finished_at is not None
    assert (history[0].finished_at - history[0].started_at).total_seconds() >= 0.3


async def test_fanout_scores_items_in_parallel_and_archives_in_batches(
    client: Client, processes: RoleProcesses
) -> None:
    await fleet(client, processes, "score_batch")
    items = ["apple", "banana", "cherry", "date", "elderberry", "fig", "grape"]
    scores = [sum(ord(c) for c in item) % 100 for item in items]
    high = [item for item, value in zip(items, scores, strict=True) if value >= 50]
    handle = await client.start("score_batch", items)
    out = await handle.result(timeout=10)
    assert out == {"items": len(items), "high": len(high), "archived": len(high), "total": sum(scores)}
    history = await client.history(handle.workflow_id)
    assert [h.kind for h in history] == ["task"] * (len(items) + (len(high) + 1) // 2)
    assert all(h.status == "done" for h in history)


async def test_payouts_of_one_account_run_one_at_a_time(client: Client, processes: RoleProcesses) -> None:
    await fleet(client, processes, "payout")
    first = await client.start("payout", {"account": "acct-7", "cents": 1250})
    second = await client.start("payout", {"account": "acct-7", "cents": 99})
    other = await client.start("payout", {"account": "acct-8", "cents": 5})
    assert await first.result(timeout=20) == {"receipt": "tr-acct-7-1250", "entry": "ledger-acct-7:-1250"}
    assert await second.result(timeout=20) == {"receipt": "tr-acct-7-99", "entry": "ledger-acct-7:-99"}
    assert await other.result(timeout=20) == {"receipt": "tr-acct-8-5", "entry": "ledger-acct-8:-5"}
    # One payout per account at a time: one's first call starts after the other's last ended. Which goes first
    # is the order their first steps are claimed in, not the order of the starts (on a cluster the two live on
    # different shards).
    spans = []
    for handle in (first, second):
        calls = await client.history(handle.workflow_id)
        assert calls[0].started_at is not None
        assert calls[-1].finished_at is not None
        spans.append((calls[0].started_at, calls[-1].finished_at))
    earlier, later = sorted(spans)
    assert later[0] >= earlier[1], spans


async def _status(client: Client, workflow_id: str, *statuses: str) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and state.status in statuses
