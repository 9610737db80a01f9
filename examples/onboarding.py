"""User onboarding: wait a day (durably), then send a welcome email; optionally remind the user after a week
if they have not completed their profile by then (``reminder_after``).

Run it: ``bdurable dev --app examples.onboarding``, then in another terminal
``bdurable start user_onboarding --input '{"email": "ada@example.com", "welcome_delay": "2s"}' --wait``.
"""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict  # pydantic validates TypedDicts from typing_extensions on 3.11

from bdurable import Context, EventTimeoutError, task, workflow


class OnboardingInput(TypedDict):
    email: str
    welcome_delay: NotRequired[str]  # defaults to "1 day"; shorten it for a demo
    reminder_after: NotRequired[str]  # e.g. "7 days": remind unless `profile.completed` arrives by then


@task(max_attempts=5, backoff="2s", timeout="30s")
async def send_email(to: str, body: str) -> str:
    """Stands in for an email provider call: I/O belongs in tasks, which are retried."""
    return f"sent to {to}: {body}"


@workflow(version="1.0")
async def user_onboarding(ctx: Context, input: OnboardingInput) -> str:
    ctx.log.info("onboarding started", email=input["email"])
    await ctx.sleep(input.get("welcome_delay", "1 day"))
    receipt = await send_email(input["email"], "Welcome!")
    if "reminder_after" in input:
        try:
            await ctx.wait_for_event("profile.completed", timeout=input["reminder_after"])
        except EventTimeoutError:
            await send_email(input["email"], "Your profile is waiting for you")
    await ctx.signal("onboarding.done", {"email": input["email"]})
    return receipt
