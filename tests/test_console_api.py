"""The web console's JSON API, health and security, over real HTTP against a real server and in-process roles.

Every endpoint of docs/console.md is called here, with good and bad input: unknown ids answer 404 and malformed
JSON 400, each with ``{"error": ...}``; actions need the token (bearer, or a session and a CSRF token from the
console's own pages) and are refused from another site, on a read-only console, and on a non-loopback address
without a token.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from contextlib import suppress
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import console_app
import httpx
import schedule_app
from console_kit import TOKEN, RunningConsole, bearer, running_console
from support import InProcessRoles, eventually, status_is, within

from bdurable import Client, Settings, Status
from bdurable.embedded import free_port

STATE_KEYS = {"workflow_id", "name", "version", "status", "step", "waiting_on", "input", "output", "error",
              "parent_id", "created_at", "updated_at", "run"}  # fmt: skip
HISTORY_KEYS = {"seq", "kind", "name", "status", "result", "started_at", "finished_at"}
DLQ_KEYS = {"entry_id", "workflow_id", "task", "args", "error", "attempts", "parked", "created_at"}
SCHEDULE_KEYS = {"schedule_id", "workflow", "version", "input", "cron", "every", "timezone", "overlap", "jitter",
                 "catchup_window", "paused", "note", "start_at", "end_at", "next_runs", "recent", "missed",
                 "created_at"}  # fmt: skip


def new_id(label: str = "wf") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def assert_error(response: httpx.Response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    assert fragment.lower() in body["error"].lower(), body


async def csrf_of(web: RunningConsole) -> str:
    """What a browser gets from any page: the CSRF cookie (the same value is in the page's meta tag)."""
    page = await web.http.get("/workflows")
    assert page.status_code == 200
    token = web.http.cookies.get("bdurable_csrf")
    assert token
    assert f'content="{token}"' in page.text
    return token


async def journey_waiting(client: Client, roles: InProcessRoles, workflow_id: str | None = None) -> str:
    roles.signal_bus()
    roles.scheduler()
    roles.dispatcher(console_app)
    handle = await client.start(console_app.journey, {"who": "ada"}, workflow_id=workflow_id or new_id("journey"))
    await eventually(lambda: status_is(client, handle.workflow_id, Status.AWAITING_EVENT), timeout=10)
    return handle.workflow_id


# -- reads ---------------------------------------------------------------------------------------------------


async def test_reads_serve_the_cli_json_shapes(client: Client, roles: InProcessRoles, settings: Settings) -> None:
    workflow_id = await journey_waiting(client, roles)
    async with running_console(settings) as web:
        listed = (await web.http.get("/api/workflows", params={"name": "journey"})).json()
        assert set(listed) == {"items", "next_cursor"}
        [item] = [w for w in listed["items"] if w["workflow_id"] == workflow_id]
        assert set(item) == STATE_KEYS

        state = (await web.http.get(f"/api/workflows/{workflow_id}")).json()
        assert set(state) == STATE_KEYS
        assert (state["status"], state["input"], state["waiting_on"]) == ("AWAITING_EVENT", {"who": "ada"},
                                                                          state["waiting_on"])  # fmt: skip
        assert "approve" in state["waiting_on"]

        history = (await web.http.get(f"/api/workflows/{workflow_id}/history")).json()
        assert [set(entry) - {"child_id", "args", "attempts"} for entry in history] == [HISTORY_KEYS] * len(history)
        assert [(e["kind"], e["status"]) for e in history] == [
            ("task", "done"), ("signal", "done"), ("child", "done"), ("sleep", "done"), ("event", "pending"),
        ]  # fmt: skip
        task, _, child, _, _ = history
        assert (task["args"], task["result"], task["attempts"]) == ({"args": ["ada"], "kwargs": {}}, "hello ada", 1)
        assert child["child_id"]
        assert child["args"] == {"who": "child"}
        child_state = (await web.http.get(f"/api/workflows/{child['child_id']}")).json()
        assert (child_state["parent_id"], child_state["status"]) == (workflow_id, "COMPLETED")

        signals = (await web.http.get(f"/api/workflows/{workflow_id}/signals")).json()
        assert [(s["seq"], s["name"], s["payload"]) for s in signals] == [
            (2, "progress", {"step": "greeted", "text": "hello ada"})
        ]

        overview = (await web.http.get("/api/overview")).json()
        assert set(overview) == {"counts", "running", "dispatchers", "live_dispatchers", "queues", "timers", "dlq",
                                 "schedules", "recent_failures"}  # fmt: skip
        assert overview["schedules"] == {"count": 0, "paused": 0, "next_runs": []}
        assert overview["counts"]["AWAITING_EVENT"] == 1
        assert overview["counts"]["COMPLETED"] == 1  # the child
        assert overview["live_dispatchers"] == 1
        [dispatcher] = overview["dispatchers"]
        assert {"journey@1.0", "payment@1.0"} <= set(dispatcher["workflows"])
        assert dispatcher["alive"] is True
        assert overview["timers"]["pending"] == 1  # the event wait's timeout

        assert (await web.http.get("/api/dlq")).json() == []


async def test_the_list_filters_by_status_name_version_prefix_and_time_with_cursor_pages(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    roles.signal_bus()
    roles.dispatcher(console_app)
    tag = uuid.uuid4().hex[:6]
    done = [await client.start(console_app.payment, {"who": str(i)}, workflow_id=f"pay-{tag}-{i}") for i in range(5)]
    waiting = await client.start(console_app.waiter, None, workflow_id=f"wait-{tag}")
    for handle in done:
        await client.result(handle.workflow_id, timeout=10)
    await eventually(lambda: status_is(client, waiting.workflow_id, Status.AWAITING_EVENT), timeout=10)

    async with running_console(settings) as web:

        async def ids(**query: Any) -> list[str]:
            response = await web.http.get("/api/workflows", params=query)
            assert response.status_code == 200, response.text
            return [w["workflow_id"] for w in response.json()["items"]]

        assert await ids(status="AWAITING_EVENT") == [waiting.workflow_id]
        assert await ids(status="awaiting_event") == [waiting.workflow_id]  # case does not matter
        assert sorted(await ids(name="payment")) == sorted(h.workflow_id for h in done)
        assert sorted(await ids(name="payment", version="1.0", status="COMPLETED")) == sorted(
            h.workflow_id for h in done
        )
        assert await ids(name="payment", version="2.0") == []
        assert await ids(prefix=f"pay-{tag}-") == [f"pay-{tag}-{i}" for i in range(5)]  # by id
        assert await ids(prefix=f"wait-{tag}") == [waiting.workflow_id]
        # creation time: everything since the first start, nothing before it
        first = await client.get_state(done[0].workflow_id)
        assert first is not None
        since = (first.created_at - timedelta(milliseconds=1)).isoformat()
        before = (first.created_at - timedelta(seconds=5)).isoformat()
        assert len(await ids(since=since)) == 6
        assert await ids(until=before) == []
        assert len(await ids(since=since.replace("+00:00", "Z"))) == 6
        # Another zone means the same moment, and the page's UTC field shows it in UTC (a filter change sends the
        # field back: shown as local time, it moved the bound by the offset).
        shifted = (first.created_at - timedelta(milliseconds=1)).astimezone(timezone(timedelta(hours=1)))
        assert len(await ids(since=shifted.isoformat())) == 6
        page_html = (await web.http.get("/workflows", params={"since": "2026-12-08T02:45:00+01:00"})).text
        assert 'value="2026-12-08T01:45:00"' in page_html

        # cursor pages: newest first, never repeating or skipping
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            query = {"name": "payment", "limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await web.http.get("/api/workflows", params=query)).json()
            seen += [w["workflow_id"] for w in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(h.workflow_id for h in done)
        assert len(seen) == len(set(seen)) == 5
        # the same by id prefix
        page = (await web.http.get("/api/workflows", params={"prefix": f"pay-{tag}-", "limit": "3"})).json()
        assert [w["workflow_id"] for w in page["items"]] == [f"pay-{tag}-{i}" for i in range(3)]
        rest = await ids(prefix=f"pay-{tag}-", limit="3", cursor=page["next_cursor"])
        assert rest == [f"pay-{tag}-3", f"pay-{tag}-4"]


# -- errors --------------------------------------------------------------------------------------------------


async def test_unknown_ids_answer_404_with_a_clear_json_error(settings: Settings) -> None:
    async with running_console(settings) as web:
        for path in ("/api/workflows/nope", "/api/workflows/nope/history", "/api/workflows/nope/signals",
                     "/api/workflows/nope/stream", "/api/dlq/0-999", "/api/dlq/not-an-entry"):  # fmt: skip
            assert_error(await web.http.get(path), 404, "no ")
        for path, body in (("/api/workflows/nope/cancel", {"reason": "x"}), ("/api/workflows/nope/resume", {}),
                           ("/api/workflows/nope/events", {"name": "go"}), ("/api/dlq/0-999/retry", {}),
                           ("/api/dlq/0-999/fail", {})):  # fmt: skip
            assert_error(await web.http.post(path, json=body, headers=bearer()), 404, "no ")
        assert_error(await web.http.get("/api/no-such-endpoint"), 404, "not found")
        assert_error(await web.http.delete("/api/workflows/nope"), 405, "method not allowed")
        page = await web.http.get("/workflows/nope")
        assert page.status_code == 404
        assert "no workflow with id &#39;nope&#39;" in page.text


async def test_a_wrong_method_on_an_action_answers_405_with_allow(settings: Settings) -> None:
    """An action URL read with GET is that action with the wrong method, not a read of a workflow, entry or
    schedule whose id happens to end in ``/cancel``, ``/purge`` or ``/trigger``."""
    async with running_console(settings) as web:
        for path in ("/api/workflows/nope/cancel", "/api/workflows/nope/resume", "/api/workflows/nope/events",
                     "/api/workflows/a/b/cancel", "/api/dlq/purge", "/api/dlq/0-999/retry", "/api/dlq/0-999/fail",
                     "/api/schedules/s1/pause", "/api/schedules/s1/unpause", "/api/schedules/s1/trigger"):  # fmt: skip
            for method in ("GET", "PUT", "DELETE"):
                response = await web.http.request(method, path)
                assert_error(response, 405, "method not allowed")
                assert response.headers["allow"] == "POST", (method, path)
        for path in ("/api/workflows/nope", "/api/workflows/nope/history", "/api/dlq/0-999", "/api/schedules/s1"):
            for method in ("PUT", "POST", "DELETE"):
                response = await web.http.request(method, path, headers=bearer())
                assert_error(response, 405, "method not allowed")
                assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}, (method, path)


async def test_an_id_ending_like_an_action_is_reached_percent_encoded(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    base = new_id("journey")
    await journey_waiting(client, roles, base)
    odd = f"{base}/cancel"
    await client.start(console_app.journey, {"who": "bob"}, workflow_id=odd)
    await eventually(lambda: status_is(client, odd, Status.AWAITING_EVENT), timeout=10)
    encoded = quote(odd, safe="")
    async with running_console(settings) as web:
        shown = await web.http.get(f"/api/workflows/{encoded}")
        assert shown.status_code == 200, shown.text
        assert (shown.json()["workflow_id"], shown.json()["input"]) == (odd, {"who": "bob"})
        history = await web.http.get(f"/api/workflows/{encoded}/history")
        assert history.status_code == 200, history.text
        assert_error(await web.http.get(f"/api/workflows/{base}/cancel"), 405)  # the action of `base`, not `odd`
        # an action on the encoded id acts on that workflow only
        cancelled = await web.http.post(f"/api/workflows/{encoded}/cancel", json={"reason": "odd"}, headers=bearer())
        assert cancelled.json() == {"workflow_id": odd, "cancel_requested": True, "reason": "odd"}
        await eventually(lambda: status_is(client, odd, Status.CANCELLED), timeout=10)
        assert await status_is(client, base, Status.AWAITING_EVENT)
        # the unencoded '/' of an id still works where it is not ambiguous
        slashed = await web.http.get(f"/api/workflows/{base}/cancel/history")
        assert slashed.status_code == 200, slashed.text
        assert slashed.json() == (await web.http.get(f"/api/workflows/{encoded}/history")).json()
        assert_error(await web.http.get(f"/api/workflows/{quote(base + '/nope', safe='')}"), 404,
                     f"no workflow with id '{base}/nope'")  # fmt: skip


async def test_bad_input_answers_400_with_a_clear_json_error(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    workflow_id = await journey_waiting(client, roles)
    async with running_console(settings) as web:
        events = f"/api/workflows/{workflow_id}/events"
        deep = b'{"name": "approve", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        for body, fragment in ((b'{"name": "approve", ', "malformed JSON body"), (b"[1, 2]", "must be an object"),
                               (b"\xff\xfe", "malformed JSON body"),
                               (b'{"name": "approve", "payload": NaN}', "NaN is not a JSON value"),
                               (b'{"name": "approve", "payload": 1e999}', "1e999 is out of the range"),
                               (deep, "nested too deeply")):  # fmt: skip
            response = await web.http.post(
                events, content=body, headers={**bearer(), "Content-Type": "application/json"}
            )
            assert_error(response, 400, fragment)
        assert_error(await web.http.post(events, json={}, headers=bearer()), 400, "'name' is required")
        assert_error(await web.http.post(events, json={"name": 7}, headers=bearer()), 400, "must be a string")
        form = {"name": "approve", "payload_json": '{"ok": tru}'}
        response = await web.http.post(events, data=form, headers=bearer())
        assert_error(response, 400, "payload is not valid JSON")
        too_big = {"name": "approve", "payload": "x" * (settings.max_payload + 10)}
        assert_error(await web.http.post(events, json=too_big, headers=bearer()), 413, "payload")
        for query, fragment in (({"status": "NOPE"}, "unknown status"), ({"limit": "0"}, "limit"),
                                ({"limit": "many"}, "limit"), ({"since": "yesterday"}, "ISO 8601"),
                                ({"until": "0001-01-01T00:00+01:00"}, "out of the range of times"),
                                ({"cursor": "garbage"}, "invalid cursor")):  # fmt: skip
            assert_error(await web.http.get("/api/workflows", params=query), 400, fragment)
        page = await web.http.get("/workflows", params={"status": "NOPE"})
        assert page.status_code == 400
        assert "unknown status" in page.text
        # nothing was delivered by the bad requests
        state = await client.get_state(workflow_id)
        assert state is not None
        assert state.status == Status.AWAITING_EVENT
        # A payload under the limit is accepted when sent escaped and form-encoded as the page does: 4 times its size.
        accented = {"note": "é" * (settings.max_payload // 2 - 1000)}  # the output holds it too, with a little more
        form = {"name": "approve", "payload_json": json.dumps(accented)}  # ensure_ascii: \u00e9, then %5Cu00e9
        response = await web.http.post(events, data=form, headers=bearer())
        assert response.status_code == 200, response.text[:300]
        assert (await client.result(workflow_id, timeout=20))["approval"] == accented


# -- actions -------------------------------------------------------------------------------------------------


async def test_actions_work_end_to_end_through_the_api(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    workflow_id = await journey_waiting(client, roles)
    token = uuid.uuid4().hex
    parked = await client.start(console_app.parked, token, workflow_id=new_id("parked"))
    doomed_parked = await client.start(console_app.parked, uuid.uuid4().hex, workflow_id=new_id("parked"))
    waiting = await client.start(console_app.waiter, {"x": 1}, workflow_id=new_id("waiter"))
    for workflow in (parked.workflow_id, doomed_parked.workflow_id):
        await eventually(functools.partial(status_is, client, workflow, Status.PARKED), timeout=10)
    await eventually(lambda: status_is(client, waiting.workflow_id, Status.AWAITING_EVENT), timeout=10)
    async with running_console(settings) as web:
        # an event
        sent = await web.http.post(f"/api/workflows/{workflow_id}/events", headers=bearer(),
                                   json={"name": "approve", "payload": {"by": "u7"}})  # fmt: skip
        assert sent.status_code == 200, sent.text
        assert sent.json() == {"workflow_id": workflow_id, "event": "approve", "accepted": True}
        output = await client.result(workflow_id, timeout=10)
        assert output["approval"] == {"by": "u7"}
        assert_error(
            await web.http.post(f"/api/workflows/{workflow_id}/events", json={"name": "late"}, headers=bearer()),
            409, "already finished",
        )  # fmt: skip
        assert_error(await web.http.post(f"/api/workflows/{workflow_id}/cancel", json={}, headers=bearer()), 409,
                     "already finished")  # fmt: skip
        assert_error(await web.http.post(f"/api/workflows/{workflow_id}/resume", headers=bearer()), 409,
                     "not VERSION_MISMATCH")  # fmt: skip

        # cancel with a reason
        cancelled = await web.http.post(f"/api/workflows/{waiting.workflow_id}/cancel", headers=bearer(),
                                        json={"reason": "operator said so"})  # fmt: skip
        assert cancelled.json() == {"workflow_id": waiting.workflow_id, "cancel_requested": True,
                                    "reason": "operator said so"}  # fmt: skip
        await eventually(lambda: status_is(client, waiting.workflow_id, Status.CANCELLED), timeout=10)

        # the dead-letter queue: retry one parked entry, fail the other, purge what is left
        entries = (await web.http.get("/api/dlq")).json()
        assert {frozenset(e) for e in entries} == {frozenset(DLQ_KEYS)}
        by_workflow = {e["workflow_id"]: e for e in entries}
        retry_entry, fail_entry = by_workflow[parked.workflow_id], by_workflow[doomed_parked.workflow_id]
        assert retry_entry["parked"] is True
        assert retry_entry["error"]["message"] == "first attempt fails on purpose"
        assert "Traceback" in retry_entry["error"]["traceback"]
        shown = (await web.http.get(f"/api/dlq/{retry_entry['entry_id']}")).json()
        assert shown == retry_entry
        retried = await web.http.post(f"/api/dlq/{retry_entry['entry_id']}/retry", headers=bearer())
        assert retried.json() == {"entry_id": retry_entry["entry_id"], "retried": True}
        assert await client.result(parked.workflow_id, timeout=10) == "recovered"
        failed = await web.http.post(f"/api/dlq/{fail_entry['entry_id']}/fail", headers=bearer())
        assert failed.status_code == 200
        await eventually(lambda: status_is(client, doomed_parked.workflow_id, Status.FAILED), timeout=10)
        assert_error(await web.http.post(f"/api/dlq/{fail_entry['entry_id']}/fail", headers=bearer()), 404)
        purged = await web.http.post("/api/dlq/purge", headers=bearer())
        assert purged.status_code == 200
        assert purged.json()["purged"] >= 0
        assert (await web.http.get("/api/dlq")).json() == []


async def test_the_dead_letter_list_comes_in_pages(client: Client, roles: InProcessRoles, settings: Settings) -> None:
    """An entry holds its arguments and traceback: the console reads and answers a page at a time, and a client
    walks the pages by the Link header to the same entries, in the same order, as `dlq list`."""
    roles.dispatcher(console_app)
    handles = [await client.start(console_app.parked, uuid.uuid4().hex, workflow_id=new_id("pg")) for _ in range(7)]
    for handle in handles:
        await eventually(functools.partial(status_is, client, handle.workflow_id, Status.PARKED), timeout=10)
    everything = [entry.entry_id for entry in await client.dlq_list()]
    assert len(everything) == 7
    async with running_console(settings) as web:
        walked: list[str] = []
        url: str | None = "/api/dlq?limit=3"
        sizes = []
        while url is not None:
            answer = await web.http.get(url)
            assert answer.status_code == 200, answer.text
            page = answer.json()
            assert {frozenset(entry) for entry in page} == {frozenset(DLQ_KEYS)}
            sizes.append(len(page))
            walked += [entry["entry_id"] for entry in page]
            link = answer.headers.get("link")
            url = link.split(">", 1)[0].removeprefix("<") if link else None
            assert link is None or link.endswith('; rel="next"')
        assert sizes == [3, 3, 1]
        assert walked == everything
        assert [e["entry_id"] for e in (await web.http.get("/api/dlq")).json()] == everything  # default page: 50
        assert_error(await web.http.get("/api/dlq", params={"cursor": "bogus"}), 400, "invalid cursor")
        assert_error(await web.http.get("/api/dlq", params={"limit": "0"}), 400, "limit must be")
        assert_error(await web.http.get("/api/dlq", params={"limit": "501"}), 400, "limit must be")
        first = await web.http.get("/dlq", params={"limit": "3"})
        assert first.status_code == 200
        assert first.text.count('class="card entry') == 3
        assert 'id="next-page"' in first.text
        link = (await web.http.get("/api/dlq", params={"limit": "5"})).headers["link"]
        cursor = parse_qs(urlsplit(link.split(">", 1)[0].removeprefix("<")).query)["cursor"][0]
        last = await web.http.get("/dlq", params={"limit": "5", "cursor": cursor})
        assert last.status_code == 200
        assert last.text.count('class="card entry') == 2
        assert 'id="next-page"' not in last.text
        assert "First page" in last.text


async def test_an_action_without_the_token_is_refused(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    workflow_id = await journey_waiting(client, roles)
    async with running_console(settings) as web:
        cancel = f"/api/workflows/{workflow_id}/cancel"
        assert_error(await web.http.post(cancel, json={}), 401, "sign in")
        assert_error(await web.http.post(cancel, json={}, headers=bearer("wrong")), 401, "wrong token")
        assert_error(await web.http.post(cancel, json={}, headers={"Authorization": "Basic eDp5"}), 401)
        # a browser's request with the page's CSRF token, but not signed in
        csrf = await csrf_of(web)
        assert_error(await web.http.post(cancel, json={}, headers={"X-CSRF-Token": csrf}), 401, "sign in")
        assert_error(await web.http.post("/api/dlq/purge"), 401)
        state = await client.get_state(workflow_id)
        assert state is not None
        assert state.status == Status.AWAITING_EVENT  # nothing happened


async def test_a_wrong_bearer_token_is_answered_after_a_delay(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    """As a wrong sign-in: half a second per wrong token (each on its own, no queue), none for the right one."""
    workflow_id = await journey_waiting(client, roles)
    async with running_console(settings) as web:
        cancel = f"/api/workflows/{workflow_id}/cancel"
        loop = asyncio.get_running_loop()
        began = loop.time()
        answers = await asyncio.gather(
            *(web.http.post(cancel, json={}, headers=bearer(f"guess-{n}")) for n in range(4))
        )
        took = loop.time() - began
        for answer in answers:
            assert_error(answer, 401, "wrong token")
        assert took >= 0.5 - 0.05
        state = await client.get_state(workflow_id)
        assert state is not None
        assert state.status == Status.AWAITING_EVENT  # no guess acted


async def test_sign_in_gives_a_session_whose_actions_need_the_csrf_token_and_the_same_origin(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    workflow_id = await journey_waiting(client, roles)
    async with running_console(settings) as web:
        csrf = await csrf_of(web)
        wrong = await web.http.post("/signin", data={"token": "nope", "csrf": csrf, "next": "/"})
        assert wrong.status_code == 401
        assert "wrong token" in wrong.text
        assert "bdurable_session" not in web.http.cookies
        no_csrf = await web.http.post("/signin", data={"token": TOKEN, "next": "/"})
        assert no_csrf.status_code == 403
        signed = await web.http.post("/signin", data={"token": TOKEN, "csrf": csrf, "next": "//evil.example/x"})
        assert signed.status_code == 303
        assert signed.headers["location"] == "/"  # never off-site
        cookie = signed.headers["set-cookie"]
        assert "bdurable_session=" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert web.http.cookies.get("bdurable_session")

        events = f"/api/workflows/{workflow_id}/events"
        body = {"name": "approve", "payload": {"by": "session"}}
        assert_error(await web.http.post(events, json=body), 403, "CSRF")
        assert_error(await web.http.post(events, json=body, headers={"X-CSRF-Token": csrf + "x"}), 403, "CSRF")
        cross_site = {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
        assert_error(await web.http.post(events, json=body, headers=cross_site), 403, "cross-site")
        other_origin = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert_error(await web.http.post(events, json=body, headers=other_origin), 403, "cross-site")
        same_origin = {"X-CSRF-Token": csrf, "Origin": web.url, "Sec-Fetch-Site": "same-origin"}
        accepted = await web.http.post(events, json=body, headers=same_origin)
        assert accepted.status_code == 200, accepted.text
        assert (await client.result(workflow_id, timeout=10))["approval"] == {"by": "session"}

        # an htmx request gets an HTML message, escaped, and the page is told to refresh
        htmx = await web.http.post(events, data={"name": "<b>late</b>", "csrf": csrf}, headers={"HX-Request": "true"})
        assert htmx.status_code == 409
        assert "<b>" not in htmx.text
        assert 'class="flash error"' in htmx.text

        out = await web.http.post("/signout", data={"csrf": csrf})
        assert out.status_code == 303
        assert not web.http.cookies.get("bdurable_session")
        assert_error(await web.http.post(events, json=body, headers=same_origin), 401, "sign in")


async def test_without_a_token_only_a_loopback_console_acts_and_only_from_its_own_pages(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    roles.signal_bus()
    roles.dispatcher(console_app)
    first = await client.start(console_app.waiter, None, workflow_id=new_id("waiter"))
    await eventually(lambda: status_is(client, first.workflow_id, Status.AWAITING_EVENT), timeout=10)
    cancel = f"/api/workflows/{first.workflow_id}/cancel"
    async with running_console(settings, token=None) as web:
        # a browser's request (it says where it comes from) needs the page's CSRF token, even from the same origin
        assert_error(await web.http.post(cancel, json={}, headers={"Origin": web.url}), 403, "CSRF")
        assert_error(await web.http.post(cancel, json={}, headers={"Sec-Fetch-Site": "same-origin"}), 403, "CSRF")
        assert_error(await web.http.post(cancel, json={}, headers={"Sec-Fetch-Site": "cross-site"}), 403, "cross")
        # a form post, as any page could send cross-site without asking: refused, with the hint for scripts
        assert_error(await web.http.post(cancel, data={"reason": "form"}), 403, "application/json")
        assert_error(await web.http.post(cancel, json={}, headers=bearer()), 401, "no BDURABLE_CONSOLE_TOKEN")
        csrf = await csrf_of(web)
        assert "Sign in" not in (await web.http.get("/")).text
        done = await web.http.post(cancel, json={"reason": "loopback"}, headers={"X-CSRF-Token": csrf})
        assert done.status_code == 200, done.text
        await eventually(lambda: status_is(client, first.workflow_id, Status.CANCELLED), timeout=10)

        # a script on this machine (JSON, no browser headers) acts as the CLI would: INTERFACE §10. A page of another
        # site cannot make a browser send that: the CORS preflight a cross-origin JSON POST needs is never granted
        preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"}  # fmt: skip
        assert "access-control-allow-origin" not in (await web.http.options(cancel, headers=preflight)).headers
        scripted = await client.start(console_app.waiter, None, workflow_id=new_id("waiter"))
        await eventually(lambda: status_is(client, scripted.workflow_id, Status.AWAITING_EVENT), timeout=10)
        events = f"/api/workflows/{scripted.workflow_id}/events"
        malformed = await web.http.post(events, content=b"{bad", headers={"Content-Type": "application/json"})
        assert_error(malformed, 400, "JSON")
        sent = await web.http.post(events, json={"name": "go", "payload": {"by": "script"}})
        assert sent.status_code == 200, sent.text
        script_cancel = f"/api/workflows/{scripted.workflow_id}/cancel"
        cancelled = await web.http.post(script_cancel, json={"reason": "script"})
        assert cancelled.status_code == 200, cancelled.text
        await eventually(lambda: status_is(client, scripted.workflow_id, Status.CANCELLED), timeout=10)
        # DNS rebinding: a page of another name resolving to 127.0.0.1 is not served at all
        assert_error(await web.http.get("/api/workflows", headers={"Host": "evil.example:80"}), 400, "loopback")
        for posing in ("127.0.0.1:80@evil.example", "[::1]evil.example", "localhost:x"):  # a name, not a port
            assert_error(await web.http.get("/api/workflows", headers={"Host": posing}), 400, "loopback")
        assert (await web.http.get("/api/workflows", headers={"Host": "[::1]:8080"})).status_code == 200

    second = await client.start(console_app.waiter, None, workflow_id=new_id("waiter"))
    await eventually(lambda: status_is(client, second.workflow_id, Status.AWAITING_EVENT), timeout=10)
    cancel = f"/api/workflows/{second.workflow_id}/cancel"
    async with running_console(settings, host="0.0.0.0", token=None) as web:
        csrf = await csrf_of(web)
        assert_error(await web.http.post(cancel, json={}, headers={"X-CSRF-Token": csrf}), 403, "read-only")
        page = await web.http.get(f"/workflows/{second.workflow_id}")
        assert "non-loopback address without BDURABLE_CONSOLE_TOKEN" in page.text
        assert 'id="cancel-form"' not in page.text
        assert (await web.http.get("/api/workflows", headers={"Host": "console.example"})).status_code == 200
    async with running_console(settings, host="0.0.0.0") as web:
        assert (await web.http.post(cancel, json={}, headers=bearer())).status_code == 200
    async with running_console(settings, read_only=True) as web:
        assert_error(await web.http.post(cancel, json={}, headers=bearer()), 403, "--read-only")
        assert "read-only (--read-only)" in (await web.http.get("/")).text


# -- schedules -----------------------------------------------------------------------------------------------


async def schedules_ready(client: Client, roles: InProcessRoles) -> None:
    """A dispatcher that holds the schedule app's workflows, registered (a trigger starts a run only then)."""
    roles.signal_bus()
    roles.dispatcher(schedule_app)
    await eventually(lambda: client.reads.registered_versions("scheduled_tick"), timeout=10)


async def test_schedules_are_served_in_the_cli_json_shapes_with_an_overview_summary(
    client: Client, settings: Settings
) -> None:
    await client.create_schedule("daily-report", "scheduled_tick", {"team": "ops"}, cron="0 9 * * MON-FRI",
                                 timezone="Europe/Berlin")  # fmt: skip
    await client.create_schedule("team/a b?", "scheduled_hold", None, every="15m", overlap="buffer_one")
    await client.create_schedule("frozen", "scheduled_tick", [1], every="1h", paused=True, note="until the audit")
    async with running_console(settings) as web:
        listed = (await web.http.get("/api/schedules")).json()
        assert [s["schedule_id"] for s in listed] == ["daily-report", "frozen", "team/a b?"]  # by id, as the CLI
        for item in listed:
            assert set(item) == SCHEDULE_KEYS
            assert item == (await client.get_schedule(item["schedule_id"])).to_json()
        shown = (await web.http.get("/api/schedules/daily-report")).json()
        assert (shown["cron"], shown["timezone"], shown["input"], shown["paused"]) == (
            "0 9 * * MON-FRI", "Europe/Berlin", {"team": "ops"}, False,
        )  # fmt: skip
        assert len(shown["next_runs"]) == 5
        # any character in an id: percent-encoded in the path
        odd = (await web.http.get(f"/api/schedules/{quote('team/a b?', safe='')}")).json()
        assert (odd["schedule_id"], odd["every"], odd["overlap"]) == ("team/a b?", "15m", "buffer_one")
        frozen = (await web.http.get("/api/schedules/frozen")).json()
        assert (frozen["paused"], frozen["note"], frozen["next_runs"]) == (True, "until the audit", [])

        summary = (await web.http.get("/api/overview")).json()["schedules"]
        assert (summary["count"], summary["paused"]) == (3, 1)
        every_run = sorted((at, s["schedule_id"]) for s in listed for at in s["next_runs"])
        assert [(run["at"], run["schedule_id"]) for run in summary["next_runs"]] == every_run[:5]
        assert [datetime.fromisoformat(run["at"]) for run in summary["next_runs"]] == sorted(
            datetime.fromisoformat(run["at"]) for run in summary["next_runs"]
        )
        page = (await web.http.get("/")).text
        assert 'href="/schedules"' in page
        assert '<a href="/schedules">3 schedules</a>, 1 paused' in page


async def test_pause_unpause_and_trigger_a_schedule_through_the_api(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    await schedules_ready(client, roles)
    await client.create_schedule("report", schedule_app.tick, {"team": "ops"}, every="1h")
    await client.create_schedule("holder", schedule_app.hold, None, every="1h", overlap="skip")
    async with running_console(settings) as web:
        paused = await web.http.post("/api/schedules/report/pause", json={"note": "quarter close"}, headers=bearer())
        assert paused.status_code == 200, paused.text
        assert set(paused.json()) == SCHEDULE_KEYS  # `bdurable schedule pause --json`: the schedule after it
        assert (paused.json()["paused"], paused.json()["note"], paused.json()["next_runs"]) == (True, "quarter close",
                                                                                                [])  # fmt: skip
        info = await client.get_schedule("report")
        assert (info.paused, info.note) == (True, "quarter close")
        unpaused = await web.http.post("/api/schedules/report/unpause", headers=bearer())
        assert unpaused.status_code == 200, unpaused.text
        assert unpaused.json()["paused"] is False
        assert len(unpaused.json()["next_runs"]) == 5
        assert not (await client.get_schedule("report")).paused
        # pause without a body: no note needed
        assert (await web.http.post("/api/schedules/holder/pause", headers=bearer())).json()["paused"] is True
        assert (await client.get_schedule("holder")).paused

        # a trigger starts one run now, named by the schedule and the time, and answers its id
        triggered = await web.http.post("/api/schedules/report/trigger", headers=bearer())
        assert triggered.status_code == 200, triggered.text
        assert set(triggered.json()) == {"schedule_id", "workflow_id"}
        workflow_id = triggered.json()["workflow_id"]
        assert triggered.json()["schedule_id"] == "report"
        assert workflow_id.startswith("report-")
        assert await client.result(workflow_id, timeout=10) == f"ran {workflow_id}"
        recent = (await web.http.get("/api/schedules/report")).json()["recent"]
        assert [(r["workflow_id"], r["status"]) for r in recent] == [(workflow_id, "COMPLETED")]

        # a paused schedule can be triggered too; with `skip` and its run still going, the trigger joins that run,
        # and the page's message says so, with a link to the run
        first = (await web.http.post("/api/schedules/holder/trigger", headers=bearer())).json()["workflow_id"]
        await eventually(lambda: status_is(client, first, Status.AWAITING_EVENT), timeout=10)
        csrf = await csrf_of(web)
        await web.http.post("/signin", data={"token": TOKEN, "csrf": csrf, "next": "/schedules"})
        htmx = {"HX-Request": "true", "X-CSRF-Token": csrf}
        joined = await web.http.post("/api/schedules/holder/trigger", headers=htmx)
        assert joined.status_code == 200, joined.text
        assert "no new run" in joined.text
        assert f'<a class="wid" href="/workflows/{quote(first, safe="")}">{first}</a>' in joined.text
        assert joined.headers["hx-trigger"] == "bdurable-changed"
        started = await web.http.post("/api/schedules/report/trigger", headers=htmx)
        assert "Triggered: started run" in started.text
        assert "/workflows/report-" in started.text
        # `buffer_one`: a second trigger waits behind the run in progress, a third finds the buffer full
        await client.update_schedule("holder", overlap="buffer_one")
        waiting = await web.http.post("/api/schedules/holder/trigger", headers=htmx)
        assert "starts once the run in progress ends (overlap buffer_one)" in waiting.text
        assert "/workflows/holder-" in waiting.text
        assert quote(first, safe="") not in waiting.text
        full = await web.http.post("/api/schedules/holder/trigger", headers=htmx)
        assert "no new run started" in full.text
        assert quote(first, safe="") in full.text
        await client.send_event(first, "release")
        assert await client.result(first, timeout=10) == first


async def test_schedule_refusals_answer_with_json_errors_and_change_nothing(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    await schedules_ready(client, roles)
    await client.create_schedule("report", schedule_app.tick, None, every="1h")
    actions = ("/api/schedules/report/pause", "/api/schedules/report/unpause", "/api/schedules/report/trigger")
    async with running_console(settings) as web:
        assert_error(await web.http.get("/api/schedules/nope"), 404, "no schedule with id 'nope'")
        for action in ("pause", "unpause", "trigger"):
            assert_error(await web.http.post(f"/api/schedules/nope/{action}", headers=bearer()), 404, "no schedule")
        assert_error(await web.http.delete("/api/schedules/report"), 405, "method not allowed")
        page = await web.http.get("/schedules")
        assert 'class="pause-form"' not in page.text  # not signed in: no actions offered
        assert "Sign in</a> to pause, unpause or trigger" in page.text
        for action in actions:
            assert_error(await web.http.post(action), 401, "sign in")
            assert_error(await web.http.post(action, headers=bearer("wrong")), 401, "wrong token")
        pause = "/api/schedules/report/pause"
        json_headers = {**bearer(), "Content-Type": "application/json"}
        assert_error(await web.http.post(pause, content=b'{"note": ', headers=json_headers), 400, "malformed JSON")
        assert_error(await web.http.post(pause, content=b'"why"', headers=json_headers), 400, "must be an object")
        assert_error(await web.http.post(pause, json={"note": 7}, headers=bearer()), 400, "must be a string")
        # a browser signed in, but without the page's CSRF token, or from another site
        csrf = await csrf_of(web)
        await web.http.post("/signin", data={"token": TOKEN, "csrf": csrf, "next": "/"})
        assert_error(await web.http.post(pause, json={}), 403, "CSRF")
        cross = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert_error(await web.http.post(pause, json={}, headers=cross), 403, "cross-site")
    async with running_console(settings, read_only=True) as web:
        for action in actions:
            assert_error(await web.http.post(action, headers=bearer()), 403, "--read-only")
        assert "read-only (--read-only)" in (await web.http.get("/schedules")).text
    async with running_console(settings, host="0.0.0.0", token=None) as web:
        csrf = await csrf_of(web)
        assert_error(await web.http.post(pause, json={}, headers={"X-CSRF-Token": csrf}), 403, "read-only")
    info = await client.get_schedule("report")
    assert (info.paused, info.recent) == (False, [])  # nothing was paused or triggered


async def test_a_schedule_of_markup_is_shown_as_text(client: Client, roles: InProcessRoles, settings: Settings) -> None:
    await schedules_ready(client, roles)
    hostile_id = "<script>alert(1)</script>"
    await client.create_schedule(hostile_id, schedule_app.tick, {"<b>x</b>": '"><img src=x onerror=alert(2)>'},
                                 every="1h", note="<i>quarter</i> close")  # fmt: skip
    async with running_console(settings, token=None) as web:
        csrf = await csrf_of(web)
        triggered = await web.http.post(f"/api/schedules/{quote(hostile_id, safe='')}/trigger",
                                        headers={"X-CSRF-Token": csrf, "HX-Request": "true"})  # fmt: skip
        assert triggered.status_code == 200, triggered.text
        assert "<script>" not in triggered.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in triggered.text
        for path in ("/schedules", "/"):
            page = await web.http.get(path)
            assert page.status_code == 200
            for markup in ("<script>alert", "<img src=x", "<b>x</b>", "<i>quarter</i>"):
                assert markup not in page.text, (path, markup)
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        page = (await web.http.get("/schedules")).text
        assert "&lt;i&gt;quarter&lt;/i&gt; close" in page
        assert f'href="/api/schedules/{quote(hostile_id, safe="")}/trigger"' not in page  # actions are hx-post
        assert f'hx-post="/api/schedules/{quote(hostile_id, safe="")}/trigger"' in page


# -- live updates --------------------------------------------------------------------------------------------


async def test_the_stream_sends_status_and_signal_events_then_ends(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    workflow_id = await journey_waiting(client, roles)
    async with running_console(settings) as web:
        events: list[tuple[str, Any]] = []

        async def follow() -> None:
            async with web.http.stream("GET", f"/api/workflows/{workflow_id}/stream") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                kind = None
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        kind = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        events.append((str(kind), json.loads(line.removeprefix("data: "))))
                        if kind == "end":
                            return

        follower = asyncio.create_task(follow())
        await eventually(lambda: any(kind == "status" for kind, _ in events), timeout=10)
        [(_, first_status)] = [(kind, data) for kind, data in events if kind == "status"]
        assert (first_status["status"], first_status["step"]) == ("AWAITING_EVENT", 4)
        [(_, signal)] = [(kind, data) for kind, data in events if kind == "signal"]
        assert (signal["signal"]["name"], signal["signal"]["payload"]) == (
            "progress", {"step": "greeted", "text": "hello ada"},
        )  # fmt: skip
        await client.send_event(workflow_id, "approve", {"ok": True})
        await within(10, follower)
        statuses = [data["status"] for kind, data in events if kind == "status"]
        assert statuses[-1] == "COMPLETED"
        assert events[-1] == ("end", {})
        assert "bdurable_console_streams 0.0" in (await web.http.get("/metrics")).text  # the stream closed its watch


async def test_an_open_stream_ends_when_the_console_stops(
    client: Client, roles: InProcessRoles, settings: Settings
) -> None:
    workflow_id = await journey_waiting(client, roles)
    lines: list[str] = []
    async with running_console(settings) as web:

        async def follow() -> None:
            async with web.http.stream("GET", f"/api/workflows/{workflow_id}/stream") as response:
                async for line in response.aiter_lines():
                    lines.append(line)

        follower = asyncio.create_task(follow())
        await eventually(lambda: any(line.startswith("event: status") for line in lines), timeout=10)
    with suppress(httpx.HTTPError):  # the server ended it, or closed the connection: done either way
        await within(5, follower)
    assert follower.done()


# -- health, metrics, escaping -------------------------------------------------------------------------------


async def test_health_metrics_and_a_console_that_waits_for_redis(settings: Settings) -> None:
    async with running_console(settings) as web:
        assert (await web.http.get("/livez")).text == "ok\n"
        assert (await web.http.get("/readyz")).status_code == 200
        await web.http.get("/api/workflows")
        for word in ("MADEUP1", "MADEUP2", "MADEUP3"):  # any word is a method on the wire: one label for them all
            assert (await web.http.request(word, "/livez")).status_code == 405
        metrics = (await web.http.get("/metrics")).text
        assert 'bdurable_role_up{role="console"} 1.0' in metrics
        assert 'bdurable_console_requests_total{method="GET",route="/api/workflows",status="200"} 1.0' in metrics
        assert 'bdurable_console_requests_total{method="other",route="/livez",status="405"} 3.0' in metrics
        assert "MADEUP" not in metrics
        assert 'bdurable_payload_bytes_total{form="plain"}' in metrics  # as on every role
        assert "bdurable_console_streams 0.0" in metrics
    unreachable = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", prefix=settings.prefix)
    async with running_console(unreachable) as web:
        assert (await web.http.get("/livez")).status_code == 200
        assert (await web.http.get("/readyz")).status_code == 503
        assert_error(await web.http.get("/api/workflows"), 503, "not reached Redis")
        assert (await web.http.get("/")).status_code == 503


async def test_payloads_are_text_never_markup(client: Client, roles: InProcessRoles, settings: Settings) -> None:
    roles.signal_bus()
    roles.dispatcher(console_app)
    hostile = {"<script>alert(1)</script>": '"><img src=x onerror=alert(2)>'}
    handle = await client.start(console_app.waiter, hostile, workflow_id=new_id("<b>x</b>"))
    await eventually(lambda: status_is(client, handle.workflow_id, Status.AWAITING_EVENT), timeout=10)
    async with running_console(settings) as web:
        page = await web.http.get(f"/workflows/{handle.workflow_id}")
        assert page.status_code == 200
        for markup in ("<script>alert", "<img src=x", "<b>x</b>"):
            assert markup not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        listing = await web.http.get("/workflows", params={"name": "waiter"})
        assert "<b>x</b>" not in listing.text
        assert "&lt;b&gt;x&lt;/b&gt;" in listing.text
