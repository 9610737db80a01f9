"""The HTML pages: each renders the JSON document its ``/api`` twin serves (``data``), through Jinja2 with
autoescaping, so a payload is always shown as text. Actions on the pages post to the ``/api`` endpoints
(htmx, with the page's CSRF token); live updates come from ``/api/workflows/{id}/stream``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bdurable.errors import InvalidInputError
from bdurable.model import Status
from bdurable.services.console import data
from bdurable.services.console.access import CSRF_COOKIE, SESSION_COOKIE, SESSION_SECONDS
from bdurable.services.console.api import _form, _read_body
from bdurable.services.console.state import error_response_for, state_of
from bdurable.services.console.timeline import timeline

__all__ = ["render", "routes"]


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page, with what every page needs: the CSRF token (set as a cookie when new), who may act."""
    console = state_of(request)
    csrf, fresh = console.policy.csrf_for(request)
    body = console.templates.get_template(template).render(
        request_path=request.url.path,
        csrf=csrf,
        may_act=console.policy.may_act(request),
        read_only=console.policy.why_read_only(),
        sign_in=console.policy.sign_in_required,
        signed_in=console.policy.signed_in(request),
        statuses=list(Status.__members__),
        **context,
    )
    response = HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
    if fresh:
        response.set_cookie(
            CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
        )
    return response


def error_page(request: Request, exc: BaseException) -> HTMLResponse:
    mapped = error_response_for(exc)
    if mapped is None:
        raise exc
    status, message = mapped
    return render(request, "error.html", status=status, title=f"Error {status}", message=message)


async def overview(request: Request) -> Response:
    try:
        view = await data.overview(state_of(request).ready_client())
    except Exception as exc:
        return error_page(request, exc)
    return render(request, "overview.html", title="Overview", view=view)


async def workflows(request: Request) -> Response:
    console = state_of(request)
    problem, known = None, set[str]()
    page: dict[str, Any] = {"items": [], "next_cursor": None}
    try:
        params = data.ListParams.from_query(request.query_params)
    except InvalidInputError as exc:
        params, problem = data.ListParams(), str(exc)
    try:
        client = console.ready_client()
        if problem is None:
            page = await data.workflows(client, params)
        known = {w for d in await client.reads.dispatchers() for w in d.workflows}
    except InvalidInputError as exc:
        problem = str(exc)
    except Exception as exc:
        return error_page(request, exc)
    next_url = (
        f"/workflows?{urlencode(params.query(cursor=page['next_cursor']))}" if page["next_cursor"] is not None else None
    )
    return render(
        request, "workflows.html", status=400 if problem else 200, title="Workflows", params=params,
        page=page, problem=problem, next_url=next_url,
        known_names=sorted({k.rpartition("@")[0] for k in known}),
        known_versions=sorted({k.rpartition("@")[2] for k in known}),
        first_url=f"/workflows?{urlencode(params.query())}",
    )  # fmt: skip


async def workflow(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]
    console = state_of(request)
    try:
        client = console.ready_client()
        state, entries, signals = await asyncio.gather(
            data.workflow(client, workflow_id), data.history(client, workflow_id), data.signals(client, workflow_id)
        )
    except Exception as exc:
        return error_page(request, exc)
    rows = timeline(state, entries, datetime.now(UTC))
    children = [row for row in rows if row.child_id]
    return render(
        request, "workflow.html", title=f"Workflow {workflow_id}", state=state, rows=rows, children=children,
        signals={signal["seq"]: signal for signal in signals},
        finished=state["status"] in ("COMPLETED", "FAILED", "CANCELLED"),
    )  # fmt: skip


async def dlq(request: Request) -> Response:
    try:
        entries, next_cursor = await data.dead_letters(state_of(request).ready_client(), request.query_params)
    except Exception as exc:
        return error_page(request, exc)
    query = dict(request.query_params)
    next_url = f"/dlq?{urlencode({**query, 'cursor': next_cursor})}" if next_cursor is not None else None
    first_url = f"/dlq?{urlencode({k: v for k, v in query.items() if k != 'cursor'})}" if "cursor" in query else None
    current_url = f"/dlq?{urlencode(query)}" if query else "/dlq"
    return render(
        request, "dlq.html", title="Dead letters", entries=entries, next_url=next_url, first_url=first_url,
        current_url=current_url, paged=next_url is not None or first_url is not None,
        unparked=sum(1 for entry in entries if not entry["parked"]),
    )  # fmt: skip


async def schedules(request: Request) -> Response:
    try:
        items = await data.schedules(state_of(request).ready_client())
    except Exception as exc:
        return error_page(request, exc)
    paused = sum(1 for item in items if item["paused"])
    return render(request, "schedules.html", title="Schedules", schedules=items, paused=paused)


def _local(path: str | None) -> str:
    """Only a path of this site (never ``//host`` or ``https://...``): no open redirect after sign-in."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


async def sign_in(request: Request) -> Response:
    console = state_of(request)
    if request.method == "GET":
        return render(
            request, "signin.html", title="Sign in", next=_local(request.query_params.get("next")), problem=None
        )
    form = _form(await _read_body(request, 16 * 1024))
    refusal = console.policy.check_same_origin(request, form.get("csrf"))
    destination = _local(form.get("next"))
    if refusal is not None:
        return render(request, "signin.html", status=refusal.status, title="Sign in", next=destination,
                      problem=refusal.message)  # fmt: skip
    if not console.policy.token_matches(str(form.get("token", ""))):
        await console.policy.wrong_token_penalty()
        problem = "wrong token" if console.policy.token else "no BDURABLE_CONSOLE_TOKEN is set: there is no sign-in"
        return render(request, "signin.html", status=401, title="Sign in", next=destination, problem=problem)
    response = RedirectResponse(destination, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, console.policy.new_session(), max_age=SESSION_SECONDS, httponly=True, samesite="strict",
        secure=request.url.scheme == "https", path="/",
    )  # fmt: skip
    return response


async def sign_out(request: Request) -> Response:
    form = _form(await _read_body(request, 16 * 1024))
    refusal = state_of(request).policy.check_same_origin(request, form.get("csrf"))
    if refusal is not None:
        return render(request, "error.html", status=refusal.status, title="Error", message=refusal.message)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def routes() -> list[Route]:
    return [
        Route("/", overview, methods=["GET"]),
        Route("/workflows", workflows, methods=["GET"]),
        Route("/workflows/{workflow_id:path}", workflow, methods=["GET"]),
        Route("/dlq", dlq, methods=["GET"]),
        Route("/schedules", schedules, methods=["GET"]),
        Route("/signin", sign_in, methods=["GET", "POST"]),
        Route("/signout", sign_out, methods=["POST"]),
    ]
