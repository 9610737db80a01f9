"""The web console in a real headless browser: Debian's ``chromium`` driven by Playwright (never a downloaded
browser: ``playwright install`` is not needed and never run).

What a person does: filter the workflow list, follow a workflow's timeline as it changes live, cancel a workflow
and retry a dead letter from the pages, pause, unpause and trigger a schedule, see an action refused without the
token and from another site, and a ``<script>`` payload shown as text. Each page's screenshot is saved to
``docs/console/`` (shown in docs/console.md). Without ``/usr/bin/chromium`` these tests skip, naming the package
to install.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import re
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import console_app
import pytest
import schedule_app
from console_kit import TOKEN, RunningConsole, running_console
from playwright.async_api import BrowserContext, Dialog, Page, async_playwright, expect
from support import InProcessRoles, eventually, status_is

from bdurable import Client, Settings, Status
from bdurable.embedded import free_port

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "console"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium: apt-get install chromium"
    ),
    pytest.mark.timeout(180),
]


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A fresh Chromium profile per test, on a laptop-sized window."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=ARGS,
            viewport={"width": 1280, "height": 860}, color_scheme="light",
        )  # fmt: skip
        try:
            yield context
        finally:
            await context.close()


async def open_page(browser: BrowserContext, url: str) -> Page:
    page = await browser.new_page()
    page.set_default_timeout(10_000)
    page.on("dialog", lambda dialog: asyncio.ensure_future(accept(dialog)))  # hx-confirm: the person says yes
    await page.goto(url)
    return page


async def accept(dialog: Dialog) -> None:
    await dialog.accept()


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top of a full-page picture
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, web: RunningConsole) -> None:
    await page.goto(f"{web.url}/signin?next=/")
    await page.fill("input[name=token]", TOKEN)
    await page.click("button[type=submit]")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def fleet(client: Client, roles: InProcessRoles) -> dict[str, str]:
    """A small fleet's worth of workflows: completed, waiting on an event, failed, parked on the DLQ."""
    roles.signal_bus()
    roles.scheduler()
    roles.dispatcher(console_app)
    for i in range(3):
        paid = await client.start(console_app.payment, {"who": f"customer {i}"}, workflow_id=new_id(f"pay-{i}-o"))
        await client.result(paid.workflow_id, timeout=10)
    ids = {
        "journey": (await client.start(console_app.journey, {"who": "ada"}, workflow_id=new_id("journey"))),
        "doomed": (await client.start(console_app.doomed, "card declined", workflow_id=new_id("doomed"))),
        "parked": (await client.start(console_app.parked, uuid.uuid4().hex, workflow_id=new_id("parked"))),
    }
    return_ids = {key: handle.workflow_id for key, handle in ids.items()}
    for key, status in (("journey", Status.AWAITING_EVENT), ("doomed", Status.FAILED), ("parked", Status.PARKED)):
        await eventually(functools.partial(status_is, client, return_ids[key], status), timeout=10)
    return return_ids


# -- finding and following -----------------------------------------------------------------------------------


async def test_the_overview_and_the_list_filters(
    client: Client, roles: InProcessRoles, settings: Settings, browser: BrowserContext
) -> None:
    ids = await fleet(client, roles)
    await client.create_schedule("nightly-payout", console_app.payment, {"who": "finance"}, cron="0 2 * * *")
    async with running_console(settings) as web:
        page = await open_page(browser, web.url + "/")
        await expect(page.locator("#dispatchers")).to_contain_text("journey@1.0")
        await expect(page.locator("#next-runs tbody tr")).to_have_count(5)  # the schedule's next five nights
        await expect(page.locator("#next-runs tbody tr").first).to_contain_text("nightly-payout")
        await expect(page.locator("#failures")).to_contain_text(ids["doomed"])
        await expect(page.locator("#dlq-size")).to_have_text("2")  # the parked call, and the one that raised
        await shot(page, "overview")

        await page.click("nav >> text=Workflows")
        rows = page.locator("#workflow-list tbody tr")
        await expect(rows).to_have_count(3 + 1 + 1 + 1 + 1)  # payments, journey and its child, doomed, parked
        await page.select_option("#f-status", "FAILED")  # filters at once (htmx), the URL follows
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text(ids["doomed"])
        assert "status=FAILED" in page.url
        await page.select_option("#f-status", "")
        await page.fill("#f-name", "payment")
        await page.click("#apply")
        await expect(rows).to_have_count(4)  # three orders' payments and the journey's child
        await page.fill("#f-prefix", "pay-1-")
        await page.click("#apply")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("pay-1-")
        await page.fill("#f-prefix", "")
        await page.fill("#f-version", "9.9")
        await page.click("#apply")
        await expect(page.locator("#no-results")).to_be_visible()
        # pages: two at a time, the next page link carries the filters and the cursor
        await page.goto(web.url + "/workflows?name=payment&limit=2")
        await expect(rows).to_have_count(2)
        first_page = await rows.all_inner_texts()
        await page.click("#next-page")
        await expect(page).to_have_url(re.compile(r"cursor="))
        await expect(rows.first).not_to_have_text(first_page[0])  # the next page replaced the first
        await expect(rows).to_have_count(2)
        assert not set(await rows.all_inner_texts()) & set(first_page)
        await page.goto(web.url + "/workflows")
        await shot(page, "workflows")


async def test_a_workflow_page_shows_its_timeline_and_updates_live(
    client: Client, roles: InProcessRoles, settings: Settings, browser: BrowserContext
) -> None:
    ids = await fleet(client, roles)
    async with running_console(settings, token=None) as web:  # loopback without a token: actions offered
        page = await open_page(browser, f"{web.url}/workflows/{ids['journey']}")
        timeline = page.locator("#timeline > li")
        await expect(timeline).to_have_count(5)
        kinds = [await item.get_attribute("data-kind") for item in await timeline.all()]
        assert kinds == ["task", "signal", "child", "sleep", "event"]
        await expect(page.locator("#status")).to_have_text("AWAITING_EVENT")
        await expect(page.locator("#waiting-on")).to_contain_text("approve")
        await expect(page.locator("#live-indicator")).to_have_text("live")
        await expect(timeline.nth(0)).to_contain_text("console_app.greet")
        await expect(timeline.nth(4)).to_contain_text("so far")  # the wait is pending
        await shot(page, "workflow")

        # an event arrives (from elsewhere): the page follows without a reload
        await client.send_event(ids["journey"], "approve", {"by": "u7"})
        await expect(page.locator("#status")).to_have_text("COMPLETED")
        await expect(page.locator("#live-indicator")).to_have_text("finished")
        await expect(page.locator("#output")).to_contain_text('"by": "u7"')
        await expect(timeline.nth(4)).to_contain_text("done")
        await expect(page.locator("#cancel-form")).to_be_hidden()  # nothing left to act on
        await expect(page.locator(".finished-note")).to_be_visible()

        # the child is a link away, and links back to its parent
        await timeline.nth(2).locator("a.wid").click()
        await expect(page.locator("#status")).to_have_text("COMPLETED")
        await page.locator(".summary a.wid").click()
        await expect(page.locator("#workflow-id")).to_have_text(ids["journey"])

        # a failed workflow shows its error and traceback
        await page.goto(f"{web.url}/workflows/{ids['doomed']}")
        await expect(page.locator("#error")).to_contain_text("card declined")
        await page.locator("#error summary").click()
        await expect(page.locator("#error .traceback")).to_contain_text("Traceback")


# -- acting --------------------------------------------------------------------------------------------------


async def test_cancel_from_the_workflow_page(
    client: Client, roles: InProcessRoles, settings: Settings, browser: BrowserContext
) -> None:
    roles.signal_bus()
    roles.dispatcher(console_app)
    workflow_id = (await client.start(console_app.waiter, {"order": 7}, workflow_id=new_id("waiter"))).workflow_id
    await eventually(functools.partial(status_is, client, workflow_id, Status.AWAITING_EVENT), timeout=10)
    async with running_console(settings) as web:
        page = await open_page(browser, f"{web.url}/workflows/{workflow_id}")
        await expect(page.locator("#actions")).to_contain_text("Sign in to act")
        await expect(page.locator("#cancel-form")).to_have_count(0)
        await sign_in(page, web)
        await shot(page, "overview-signed-in")
        await page.goto(f"{web.url}/workflows/{workflow_id}")
        # the JSON editor refuses what is not JSON before anything is sent
        await page.fill("#event-payload", '{"approver": ')
        await expect(page.locator("#event-payload-problem")).to_contain_text("Not valid JSON")
        await expect(page.locator("#event-button")).to_be_disabled()
        await page.fill("#event-payload", '{"approver": "u7"}')
        await expect(page.locator("#event-button")).to_be_enabled()
        await page.fill("#cancel-reason", "customer changed their mind")
        await page.click("#cancel-button")  # confirmed in the dialog
        await expect(page.locator("#action-result")).to_contain_text("Cancellation requested")
        await expect(page.locator("#status")).to_have_text("CANCELLED")
        await expect(page.locator("#timeline")).to_contain_text("cancelled")  # the signal of its cleanup
    state = await client.get_state(workflow_id)
    assert state is not None
    assert state.status == Status.CANCELLED


async def test_retry_a_dead_letter_from_the_dlq_page(
    client: Client, roles: InProcessRoles, settings: Settings, browser: BrowserContext
) -> None:
    ids = await fleet(client, roles)
    async with running_console(settings, token=None) as web:  # loopback without a token: actions allowed
        page = await open_page(browser, f"{web.url}/dlq")
        entry = page.locator(".entry.parked")
        await expect(entry).to_have_count(1)
        await expect(entry).to_contain_text("console_app.flaky")
        await expect(entry).to_contain_text("first attempt fails on purpose")
        await entry.locator("summary", has_text="Traceback").click()
        await expect(entry.locator(".traceback")).to_contain_text("RuntimeError")
        await shot(page, "dlq")
        await entry.locator("button.retry").click()  # confirmed in the dialog
        await expect(page.locator("#flash")).to_contain_text("retried")
        await expect(page.locator(".entry.parked")).to_have_count(0)
        assert await client.result(ids["parked"], timeout=10) == "recovered"
        # what is left is for the record (the doomed workflow's call raised): purge it, with a confirmation
        await expect(page.locator(".entry")).to_have_count(1)
        await page.click("#purge-button")
        await expect(page.locator("#flash")).to_contain_text("Purged 1 entry")
        await expect(page.locator("#dlq-empty")).to_be_visible()


async def test_pause_unpause_and_trigger_a_schedule_from_the_schedules_page(
    client: Client, roles: InProcessRoles, settings: Settings, browser: BrowserContext
) -> None:
    roles.signal_bus()
    roles.dispatcher(schedule_app)
    await eventually(lambda: client.reads.registered_versions("scheduled_tick"), timeout=10)
    await client.create_schedule("daily-report", schedule_app.tick, {"team": "ops"}, cron="0 9 * * MON-FRI",
                                 timezone="Europe/Berlin")  # fmt: skip
    await client.create_schedule("sync-every-15m", schedule_app.tick, None, every="15m", overlap="buffer_one")
    await client.create_schedule("cleanup", schedule_app.tick, None, cron="30 2 * * *", paused=True,
                                 note="until the migration is done")  # fmt: skip
    async with running_console(settings) as web:
        page = await open_page(browser, f"{web.url}/")
        await expect(page.locator("#schedules-panel #schedule-counts")).to_have_text("3 schedules, 1 paused")
        await expect(page.locator("#next-runs tbody tr")).to_have_count(5)
        await page.click("#schedules-panel h2 a")
        await expect(page).to_have_url(f"{web.url}/schedules")
        card = page.locator('[data-schedule="daily-report"]')
        await expect(card.locator(".timing")).to_have_text("cron 0 9 * * MON-FRI in Europe/Berlin")
        await expect(card.locator(".next-runs li")).to_have_count(5)
        await expect(card.locator(".next-runs li").first).to_contain_text(re.compile(r" 09:00:00 CES?T "))
        await expect(card.locator(".pause-form")).to_have_count(0)  # not signed in: nothing to press
        await sign_in(page, web)
        await page.goto(f"{web.url}/schedules")
        await expect(page.locator('[data-schedule="cleanup"] .note')).to_have_text("until the migration is done")
        await expect(page.locator('[data-schedule="cleanup"] button.unpause')).to_be_visible()

        # pause, with a note: the card turns paused, shows the note, and has no next runs
        await card.locator(".pause-note").fill("quarter close")
        await card.locator("button.pause").click()
        await expect(page.locator("#flash")).to_contain_text("Schedule daily-report paused")
        await expect(card.locator(".state")).to_have_text("paused")
        await expect(card.locator(".note")).to_have_text("quarter close")
        await expect(card).to_contain_text("None while paused.")
        await expect(card.locator("button.pause")).to_have_count(0)
        info = await client.get_schedule("daily-report")
        assert (info.paused, info.note) == (True, "quarter close")

        # unpause: active again, with its next runs
        await card.locator("button.unpause").click()
        await expect(page.locator("#flash")).to_contain_text("unpaused")
        await expect(card.locator(".state")).to_have_text("active")
        await expect(card.locator(".next-runs li")).to_have_count(5)
        assert not (await client.get_schedule("daily-report")).paused

        # trigger (confirmed in the dialog): the message links to the run, which the recent firings list too
        await card.locator("button.trigger").click()
        run_link = page.locator("#flash a.wid")
        await expect(run_link).to_contain_text("daily-report-")
        workflow_id = await run_link.inner_text()
        assert await client.result(workflow_id, timeout=10) == f"ran {workflow_id}"
        recent = card.locator("table.recent tbody tr")
        await expect(recent).to_have_count(1)
        await expect(recent.first.locator("a.wid")).to_have_text(workflow_id)
        await page.goto(f"{web.url}/schedules")  # the run's status, now that it finished
        await expect(recent.first).to_contain_text("COMPLETED")
        await shot(page, "schedules")
        await page.set_viewport_size({"width": 390, "height": 844})  # a phone: reflows, no sideways scrolling
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await page.set_viewport_size({"width": 1280, "height": 860})
        await recent.first.locator("a.wid").click()
        await expect(page.locator("#workflow-id")).to_have_text(workflow_id)
        await expect(page.locator("#status")).to_have_text("COMPLETED")


async def test_an_action_without_the_token_is_refused(
    client: Client, roles: InProcessRoles, settings: Settings, browser: BrowserContext
) -> None:
    roles.signal_bus()
    roles.dispatcher(console_app)
    workflow_id = (await client.start(console_app.waiter, None, workflow_id=new_id("waiter"))).workflow_id
    await eventually(functools.partial(status_is, client, workflow_id, Status.AWAITING_EVENT), timeout=10)
    async with running_console(settings) as web:
        page = await open_page(browser, f"{web.url}/workflows/{workflow_id}")
        await shot(page, "workflow-read-only")
        # the page offers no action; a hand-made request from the page, with its CSRF token, is refused too
        status = await page.evaluate(
            """async (path) => {
                const csrf = document.querySelector('meta[name="csrf-token"]').content;
                const response = await fetch(path, {method: "POST", headers: {"X-CSRF-Token": csrf}});
                return [response.status, (await response.json()).error];
            }""",
            f"/api/workflows/{workflow_id}/cancel",
        )
        assert status[0] == 401
        assert "sign in" in status[1]
        await page.goto(f"{web.url}/signin")
        await page.fill("input[name=token]", "not the token")
        await page.click("button[type=submit]")
        await expect(page.locator(".flash.error")).to_have_text("wrong token")
        await shot(page, "signin")
    state = await client.get_state(workflow_id)
    assert state is not None
    assert state.status == Status.AWAITING_EVENT


@pytest.fixture
def attacker_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Another site on this machine (another origin): a page that posts to the console behind the person's back."""
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


async def test_a_cross_site_request_cannot_act(
    client: Client,
    roles: InProcessRoles,
    settings: Settings,
    browser: BrowserContext,
    attacker_site: tuple[str, Path],
) -> None:
    """The most exposed set-up (loopback, no token: the pages act without signing in): another site's form and
    script, in the same browser that has the console open, change nothing."""
    roles.signal_bus()
    roles.dispatcher(console_app)
    workflow_id = (await client.start(console_app.waiter, None, workflow_id=new_id("waiter"))).workflow_id
    await eventually(functools.partial(status_is, client, workflow_id, Status.AWAITING_EVENT), timeout=10)
    site, root = attacker_site
    async with running_console(settings, token=None) as web:
        console_page = await open_page(browser, f"{web.url}/workflows/{workflow_id}")  # has the CSRF cookie
        await expect(console_page.locator("#cancel-form")).to_be_visible()
        target = f"{web.url}/api/workflows/{workflow_id}/cancel"
        (root / "form.html").write_text(
            f'<form id="f" method="post" action="{target}"><input name="reason" value="csrf"></form>'
            '<script>document.getElementById("f").submit()</script>'
        )
        (root / "fetch.html").write_text(
            f'<script>fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include", '
            'body: "reason=csrf", headers: {"Content-Type": "application/x-www-form-urlencoded"}})'
            '.then(() => document.title = "sent")</script>'
        )
        evil = await open_page(browser, f"{site}/form.html")
        await expect(evil.locator("body")).to_contain_text("cross-site request refused")
        evil = await open_page(browser, f"{site}/fetch.html")
        await expect(evil).to_have_title("sent")
        await asyncio.sleep(0.5)
    state = await client.get_state(workflow_id)
    assert state is not None
    assert state.status == Status.AWAITING_EVENT


async def test_a_script_payload_stays_text(
    client: Client, roles: InProcessRoles, settings: Settings, browser: BrowserContext
) -> None:
    roles.signal_bus()
    roles.dispatcher(console_app)
    hostile = {
        "note": "<script>window.__xss = 1</script>",
        "attribute": '"><img src=x onerror="window.__xss = 2">',
    }
    workflow_id = new_id("<script>window.__xss=3</script>")
    await client.start(console_app.waiter, hostile, workflow_id=workflow_id)
    await eventually(functools.partial(status_is, client, workflow_id, Status.AWAITING_EVENT), timeout=10)
    async with running_console(settings) as web:
        page = await open_page(browser, f"{web.url}/workflows?name=waiter")
        await expect(page.locator("#workflow-list")).to_contain_text("<script>window.__xss=3</script>")
        await page.locator("#workflow-list a.wid").first.click()
        await expect(page.locator("#input")).to_contain_text("<script>window.__xss = 1</script>")
        await expect(page.locator("#input")).to_contain_text('"><img src=x onerror=')
        await expect(page.locator("#workflow-id")).to_have_text(workflow_id)
        assert await page.evaluate("window.__xss") is None
        assert await page.locator("#main img").count() == 0
        assert await page.locator("script:not([src])").count() == 0
        await shot(page, "workflow-escaped")


# -- the layout ----------------------------------------------------------------------------------------------


async def test_the_pages_work_on_a_phone_and_in_the_dark(
    client: Client, roles: InProcessRoles, settings: Settings, browser: BrowserContext
) -> None:
    ids = await fleet(client, roles)
    async with running_console(settings) as web:
        page = await open_page(browser, f"{web.url}/workflows/{ids['journey']}")
        await page.set_viewport_size({"width": 390, "height": 844})
        await expect(page.locator("#timeline > li")).to_have_count(5)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, "the page scrolls sideways on a phone"
        await shot(page, "workflow-phone")
        await page.click("#theme")
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 19, 24)"
        await page.goto(f"{web.url}/")
        assert await page.evaluate("document.documentElement.dataset.theme") == "dark"  # remembered
        await page.set_viewport_size({"width": 1280, "height": 860})
        await shot(page, "overview-dark")
