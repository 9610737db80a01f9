"""The workflow whose recorded histories ``tests/test_replayer.py`` exports and replays.

``replay_order`` makes one durable call of every kind; the ``replay_app_*`` modules define the same
``replay_order@1`` changed in one way each (the kind of edit a deploy must not make without a new version).
"""

from __future__ import annotations

from typing import Any

from bdurable import Context, task, workflow


@task(name="replay.reserve")
async def reserve(item: str, quantity: int) -> str:
    return f"r-{item}-{quantity}"


@task(name="replay.charge")
async def charge(reservation: str, amount: int) -> int:
    return amount


@task(name="replay.refund")
async def refund(reservation: str, amount: int) -> int:
    return -amount


@task(name="replay.notify")
async def notify(reservation: str) -> None:
    return None


@task(name="replay.double")
async def double(value: int) -> int:
    return 2 * value


@workflow(name="replay_child", version="1")
async def replay_child(ctx: Context, input: int) -> int:
    return await double(input)


@workflow(name="replay_order", version="1")
async def replay_order(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    order_id = str(ctx.uuid4())  # call 1: a recorded value
    reservation = await reserve(input["item"], input["quantity"])  # 2: a task
    await ctx.sleep("50ms")  # 3: a timer
    approval = await ctx.wait_for_event("approved")  # 4: an event
    doubled = await ctx.execute(replay_child, input["quantity"])  # 5: a child workflow
    await ctx.signal("charging", {"order": order_id, "amount": doubled * 10})  # 6: a signal
    paid = await charge(reservation, doubled * 10)  # 7: a task
    return {"order": order_id, "reservation": reservation, "approver": approval["by"], "paid": paid}
