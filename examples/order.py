"""E-commerce order: a payment child workflow, an approval event, shipping, and cleanup on cancellation.

``process_order`` signals its progress (``status.update``), runs ``process_payment`` as a child workflow,
waits for a human to send ``order.approved`` (with a timeout), ships, and returns the tracking number.
Cancelled at any point, it refunds what was charged and signals the cancellation before ending.
"""

from __future__ import annotations

from dataclasses import dataclass

from bdurable import Context, EventTimeoutError, NonRetryableError, WorkflowCancelledError, task, workflow


@dataclass
class Order:
    order_id: str
    amount: int  # cents
    customer: str
    approval_timeout: str = "1 day"


@dataclass
class Payment:
    order_id: str
    amount: int


@task(name="payments.charge", max_attempts=3, backoff="1s", timeout="30s")
async def charge(order_id: str, amount: int) -> str:
    if amount <= 0:
        raise NonRetryableError(f"invalid amount {amount} for order {order_id}")
    return f"ch_{order_id}"


@task(name="payments.refund", max_attempts=5, backoff="1s")
async def refund(charge_id: str) -> str:
    return f"re_{charge_id}"


@task(name="shipping.ship", max_attempts=5, backoff="1s")
async def ship(order_id: str, customer: str) -> str:
    return f"TRACK-{order_id}-{customer[:3].upper()}"


@workflow(version="1.0")
async def process_payment(ctx: Context, payment: Payment) -> str:
    return await charge(payment.order_id, payment.amount)


@workflow(version="1.0")
async def process_order(ctx: Context, order: Order) -> dict[str, str]:
    charge_id: str | None = None
    try:
        await ctx.signal("status.update", {"order_id": order.order_id, "status": "received"})
        charge_id = await ctx.execute(process_payment, Payment(order.order_id, order.amount))
        await ctx.signal("status.update", {"order_id": order.order_id, "status": "paid"})
        try:
            approval = await ctx.wait_for_event("order.approved", timeout=order.approval_timeout)
        except EventTimeoutError:
            await refund(charge_id)
            await ctx.signal("status.update", {"order_id": order.order_id, "status": "expired"})
            return {"status": "expired", "charge_id": charge_id}
        tracking = await ship(order.order_id, order.customer)
        await ctx.signal("status.update", {"order_id": order.order_id, "status": "shipped"})
        return {"status": "shipped", "tracking": tracking, "approved_by": str(approval.get("approver_id"))}
    except WorkflowCancelledError as cancelled:
        if charge_id is not None:
            await refund(charge_id)
        await ctx.signal(
            "status.update", {"order_id": order.order_id, "status": "cancelled", "reason": cancelled.reason}
        )
        raise
