"""``replay_order@1`` with a task call added after the recorded ones: call 8 is new."""

from __future__ import annotations

from typing import Any

from replay_app import charge, notify, replay_child, reserve

from bdurable import Context, workflow


@workflow(name="replay_order", version="1")
async def replay_order(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    order_id = str(ctx.uuid4())
    reservation = await reserve(input["item"], input["quantity"])
    await ctx.sleep("50ms")
    approval = await ctx.wait_for_event("approved")
    doubled = await ctx.execute(replay_child, input["quantity"])
    await ctx.signal("charging", {"order": order_id, "amount": doubled * 10})
    paid = await charge(reservation, doubled * 10)
    await notify(reservation)  # added
    return {"order": order_id, "reservation": reservation, "approver": approval["by"], "paid": paid}
