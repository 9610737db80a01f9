"""The web console's pure parts: the timeline, the list's query parsing, the schedules summary and times, the
access rules and their tokens."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.requests import Request

from bdurable.errors import InvalidInputError
from bdurable.services.console.access import CSRF_COOKIE, SESSION_COOKIE, AccessPolicy, is_loopback
from bdurable.services.console.data import ListParams, parse_time, schedule_summary
from bdurable.services.console.state import make_templates
from bdurable.services.console.timeline import format_duration, timeline

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def entry(seq: int, kind: str, status: str, start: float | None, end: float | None, **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "name": f"{kind}-{seq}", "status": status, "result": extra.get("result"),
            "started_at": at(start) if start is not None else None, "finished_at": at(end) if end is not None else None,
            "child_id": extra.get("child_id"), "args": extra.get("args")}  # fmt: skip


def test_durations_read_like_a_person_writes_them() -> None:
    assert [format_duration(s) for s in (None, 0.012, 1.0, 1.25, 59.5, 184, 7500, 3 * 86400 + 4 * 3600)] == [
        "", "12 ms", "1 s", "1.25 s", "59.50 s", "3 min 4 s", "2 h 5 min", "3 d 4 h",
    ]  # fmt: skip


def test_the_timeline_places_each_call_in_the_run() -> None:
    state = {"status": "COMPLETED", "created_at": at(0), "updated_at": at(100)}
    error = {"type": "RuntimeError", "message": "no", "traceback": "..."}
    rows = timeline(
        state,
        [
            entry(1, "task", "done", 0, 10, args={"args": [1], "kwargs": {}}, result=2),
            entry(2, "signal", "done", 10, 10),
            entry(3, "child", "failed", 10, 60, child_id="c-1", result=error),
            entry(4, "sleep", "done", 60, 100),
        ],
        now=T0 + timedelta(seconds=500),
    )
    assert [(r.kind_label, r.duration, r.offset, r.width) for r in rows] == [
        ("task", "10 s", 0.0, 10.0),
        ("signal", "", 10.0, 0.5),  # an instant: a visible dot
        ("child workflow", "50 s", 10.0, 50.0),
        ("sleep", "40 s", 60.0, 40.0),
    ]
    assert rows[2].failed
    assert rows[2].child_id == "c-1"
    assert not rows[0].failed
    assert rows[0].args == {"args": [1], "kwargs": {}}


def test_a_running_workflow_is_measured_until_now() -> None:
    state = {"status": "AWAITING_EVENT", "created_at": at(0), "updated_at": at(5)}
    rows = timeline(state, [entry(1, "event", "pending", 5, None)], now=T0 + timedelta(seconds=25))
    (row,) = rows
    assert (row.running, row.duration, row.offset, row.width) == (True, "20 s", 20.0, 80.0)


def test_list_queries_are_checked_before_anything_is_read() -> None:
    params = ListParams.from_query({"status": "failed", "name": " pay ", "limit": "20", "since": "2026-12-07T08:00"})
    assert (params.status, params.name, params.limit, params.since) == ("FAILED", "pay", 20, T0)
    assert params.query(cursor="c") == {"status": "FAILED", "name": "pay", "limit": "20",
                                        "since": T0.isoformat(), "cursor": "c"}  # fmt: skip
    assert ListParams.from_query({"prefix": "a b "}).prefix == "a b "  # an id prefix is kept as typed
    assert ListParams.from_query({"status": "", "name": ""}) == ListParams()
    for bad in ({"status": "DONE"}, {"limit": "0"}, {"limit": "501"}, {"limit": "-1"}, {"until": "soon"}):
        with pytest.raises(InvalidInputError):
            ListParams.from_query(bad)
    assert parse_time("2026-12-07T09:00:00+01:00", "t") == T0
    assert parse_time("2026-12-07T08:00:00Z", "t") == T0


def test_the_overview_lists_the_soonest_runs_across_every_schedule() -> None:
    def item(schedule_id: str, *hours: int, paused: bool = False) -> dict[str, Any]:
        return {"schedule_id": schedule_id, "workflow": f"wf-{schedule_id}", "paused": paused,
                "next_runs": [at(hour * 3600) for hour in hours]}  # fmt: skip

    summary = schedule_summary([item("a", 1, 5, 9), item("b", 2, 3, 4, 10), item("c", paused=True)], limit=4)
    assert (summary["count"], summary["paused"]) == (3, 1)
    assert [(run["schedule_id"], run["at"], run["workflow"]) for run in summary["next_runs"]] == [
        ("a", at(3600), "wf-a"), ("b", at(7200), "wf-b"), ("b", at(10800), "wf-b"), ("b", at(14400), "wf-b"),
    ]  # fmt: skip
    # by the instant, not the text: the same time written in two offsets sorts as one
    other = {**item("z"), "next_runs": ["2026-12-07T09:30:00+01:00"]}  # 08:30 UTC: before a's 09:00 UTC
    assert schedule_summary([item("a", 1), other])["next_runs"][0]["schedule_id"] == "z"
    assert schedule_summary([]) == {"count": 0, "paused": 0, "next_runs": []}


def test_a_cron_schedules_runs_read_in_its_own_time_zone() -> None:
    in_zone = make_templates().filters["in_zone"]
    assert in_zone("2026-12-07T08:00:00+00:00", "Europe/Berlin") == "Mon 2026-12-07 09:00:00 CET"
    assert in_zone("2026-07-06T07:00:00+00:00", "Europe/Berlin") == "Mon 2026-07-06 09:00:00 CEST"  # summer time
    assert in_zone("2026-12-07T08:00:00+00:00", "America/New_York") == "Mon 2026-12-07 03:00:00 EST"
    assert in_zone("2026-12-07T08:00:00+00:00", "No/Such_Zone") == "2026-12-07 08:00:00"  # falls back to UTC
    assert in_zone(None, "Europe/Berlin") == ""


def request(headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if cookies:
        raw.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    if not any(name == b"host" for name, _ in raw):
        raw.append((b"host", b"127.0.0.1:8080"))
    return Request({"type": "http", "method": "POST", "path": "/api/x", "headers": raw, "scheme": "http",
                    "server": ("127.0.0.1", 8080), "query_string": b""})  # fmt: skip


def test_who_may_act() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "console.example"))
    assert AccessPolicy("127.0.0.1").actions_enabled
    assert not AccessPolicy("127.0.0.1", read_only=True).actions_enabled
    assert not AccessPolicy("0.0.0.0").actions_enabled
    assert AccessPolicy("0.0.0.0", token="t").actions_enabled
    assert AccessPolicy("0.0.0.0").why_read_only() == (
        "read-only: it listens on a non-loopback address without BDURABLE_CONSOLE_TOKEN"
    )
    loopback = AccessPolicy("127.0.0.1")
    assert loopback.check_host("localhost:8080") is None
    assert loopback.check_host("[::1]:8080") is None
    assert loopback.check_host("evil.example") is not None
    assert loopback.check_host(None) is not None
    assert AccessPolicy("0.0.0.0").check_host("console.example") is None


def test_bearer_sessions_and_csrf_tokens() -> None:
    policy = AccessPolicy("0.0.0.0", token="secret")
    assert policy.check_action(request({"Authorization": "Bearer secret"})) is None
    assert policy.check_action(request({"Authorization": "Bearer nope"})).status == 401  # type: ignore[union-attr]
    assert policy.check_action(request()).status == 401  # type: ignore[union-attr]
    session = policy.new_session()
    csrf, fresh = policy.csrf_for(request())
    assert fresh
    assert policy.csrf_for(request(cookies={CSRF_COOKIE: csrf})) == (csrf, False)
    signed_in = {SESSION_COOKIE: session, CSRF_COOKIE: csrf}
    assert policy.check_action(request({"X-CSRF-Token": csrf}, signed_in)) is None
    assert policy.check_action(request({}, signed_in), form_csrf=csrf) is None
    refused = policy.check_action(request({"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-site"}, signed_in))
    assert refused is not None
    assert refused.status == 403
    # a token signed by another console (another token) or tampered with is worthless
    other = AccessPolicy("0.0.0.0", token="other")
    assert not other.signed_in(request(cookies={SESSION_COOKIE: session}))
    assert not policy.signed_in(request(cookies={SESSION_COOKIE: session[:-2] + "xx"}))
    forged, _ = other.csrf_for(request())
    assert policy.check_action(request({"X-CSRF-Token": forged}, {SESSION_COOKIE: session, CSRF_COOKIE: forged}))
    # a session cookie never passes as a CSRF token, nor the reverse
    assert not policy.signed_in(request(cookies={SESSION_COOKIE: csrf}))
    assert policy.check_action(request({"X-CSRF-Token": session}, {SESSION_COOKIE: session, CSRF_COOKIE: session}))


def test_sessions_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = AccessPolicy("0.0.0.0", token="secret")
    session = policy.new_session()
    assert policy.signed_in(request(cookies={SESSION_COOKIE: session}))
    later = time.time() + 13 * 3600
    monkeypatch.setattr(time, "time", lambda: later)
    assert not policy.signed_in(request(cookies={SESSION_COOKIE: session}))
