"""An entity: one workflow per account that applies `change` events (deposits and withdrawals) forever, with a history
(and Redis memory) that stays bounded because it continues as new every 100 events.

Run it: ``bdurable dev --app examples.entity``, then in another terminal
``bdurable start account --id acct-7 --input '{"balance": 0}'`` and
``bdurable send-event acct-7 change --payload '{"amount": 250}'``; ``bdurable state acct-7 --json`` shows which run
it is on (``"run"``).
"""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict  # pydantic validates TypedDicts from typing_extensions on 3.11

from bdurable import Context, workflow

EVENTS_PER_RUN = 100  # a run's history holds at most this many events (and their signals)


class Account(TypedDict):
    balance: int
    applied: NotRequired[int]  # events applied over all runs


@workflow(version="1.0")
async def account(ctx: Context, state: Account) -> int:
    """Applies events one at a time; `close` ends it with the final balance."""
    balance, applied = state["balance"], state.get("applied", 0)
    for _ in range(EVENTS_PER_RUN):
        event = await ctx.wait_for_event("change")
        if event.get("close"):
            return balance
        amount = int(event["amount"])
        if balance + amount < 0:
            await ctx.signal("refused", {"amount": amount, "balance": balance})
            continue
        balance += amount
        applied += 1
        await ctx.signal("balance", balance)
    return await ctx.continue_as_new({"balance": balance, "applied": applied})
