"""Payouts through a payment provider that allows 2 calls at once and 50 a second; one payout per account at
a time, and one ledger entry per account at a time. Flow control keeps to those limits fleet-wide, whatever
the number of dispatchers, and through crashes.

Run it: ``bdurable dev --app examples.payouts``, then in another terminal
``bdurable start payout --input '{"account": "acct-7", "cents": 1250}' --wait``.
"""

from __future__ import annotations

from typing_extensions import TypedDict  # pydantic validates TypedDicts from typing_extensions on 3.11

from bdurable import Context, task, workflow


class PayoutInput(TypedDict):
    account: str
    cents: int


@task(concurrency=2, rate_limit="50/s", max_attempts=5, backoff="200ms")
async def transfer(account: str, cents: int) -> str:
    """Stands in for the provider's API: at most 2 calls in flight and 50 starts a second, fleet-wide."""
    return f"tr-{account}-{cents}"


@task(concurrency=1, key=lambda account, cents: account)
async def ledger_entry(account: str, cents: int) -> str:
    """One ledger write per account at a time (other accounts are not held back)."""
    return f"ledger-{account}:{-cents}"


@workflow(version="1.0", concurrency=1, key=lambda input: input["account"])
async def payout(ctx: Context, input: PayoutInput) -> dict[str, str]:
    """A second payout of the same account waits QUEUED until this one ends."""
    receipt = await transfer(input["account"], input["cents"])
    entry = await ledger_entry(input["account"], input["cents"])
    return {"receipt": receipt, "entry": entry}
