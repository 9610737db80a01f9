"""The JSON API under ``/api``: the CLI's ``--json`` shapes, server-sent events, and the actions.

Errors are ``{"error": "..."}`` with 400 (bad input, malformed JSON), 401 (missing or wrong token), 403 (the
console is read-only, or a cross-site request), 404 (unknown id), 409 (the state does not allow it), 413 (too
large), 503 (Redis unavailable). Actions answer JSON, or, to the pages' htmx requests, a short HTML message
(text, escaped; a link to a workflow in it is built with ``Markup.format``, which escapes what it is given).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Route
from starlette.types import Scope

from bdurable.client import Client
from bdurable.codec import read_json
from bdurable.errors import InvalidInputError, WorkflowNotFoundError
from bdurable.services.console import data
from bdurable.services.console.state import ConsoleState, error_response_for, state_of, url_id

__all__ = ["PING_SECONDS", "ApiRoute", "json_error", "routes"]

PING_SECONDS = 15.0  # a comment line on idle streams, so proxies keep them open and closed tabs are noticed
# An action's body: at most the largest payload, as sent, plus this. As sent, a payload's JSON can be 4 times the
# bytes it is counted as (BDURABLE_MAX_PAYLOAD is judged on its UTF-8 JSON): "é" is 2 bytes, escaped "\u00e9"
# 6, and form-encoded as the page's event editor sends it, "%5Cu00e9", 8.
BODY_SLACK = 64 * 1024
AS_SENT = 4

Body = dict[str, Any]


def json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def failure(request: Request, status: int, message: str) -> Response:
    if _is_htmx(request):
        return HTMLResponse(f'<p class="flash error" role="alert">{escape(message)}</p>', status_code=status)
    return json_error(status, message)


async def guarded(request: Request, read: Callable[[Client], Awaitable[Any]]) -> Response:
    """Run a read; library errors become their HTTP status with a JSON error."""
    try:
        return JSONResponse(await read(state_of(request).ready_client()))
    except Exception as exc:
        mapped = error_response_for(exc)
        if mapped is None:
            raise
        return json_error(*mapped)


# -- reads ---------------------------------------------------------------------------------------------------


async def list_workflows(request: Request) -> Response:
    try:
        params = data.ListParams.from_query(request.query_params)
    except InvalidInputError as exc:
        return json_error(400, str(exc))
    return await guarded(request, lambda client: data.workflows(client, params))


async def get_workflow(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]
    return await guarded(request, lambda client: data.workflow(client, workflow_id))


async def get_history(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]
    return await guarded(request, lambda client: data.history(client, workflow_id))


async def get_signals(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]
    return await guarded(request, lambda client: data.signals(client, workflow_id))


async def list_dead_letters(request: Request) -> Response:
    """A page of entries, as a list (the CLI's shape); a ``Link: <...>; rel="next"`` header names the next page."""
    try:
        entries, next_cursor = await data.dead_letters(state_of(request).ready_client(), request.query_params)
    except Exception as exc:
        mapped = error_response_for(exc)
        if mapped is None:
            raise
        return json_error(*mapped)
    headers = {}
    if next_cursor is not None:
        query = urlencode({**request.query_params, "cursor": next_cursor})
        headers["Link"] = f'</api/dlq?{query}>; rel="next"'
    return JSONResponse(entries, headers=headers)


async def get_dead_letter(request: Request) -> Response:
    entry_id = request.path_params["entry_id"]

    async def read(client: Client) -> dict[str, Any]:
        return (await client.dlq_show(entry_id)).to_json()

    return await guarded(request, read)


async def get_overview(request: Request) -> Response:
    return await guarded(request, data.overview)


# -- live updates --------------------------------------------------------------------------------------------


async def stream_workflow(request: Request) -> Response:
    """Server-sent events of one workflow: ``status`` and ``signal`` events as ``client.watch`` yields them
    (one watch per stream, on the client's one shared pub/sub connection), then ``end`` when it finishes."""
    console = state_of(request)
    workflow_id = request.path_params["workflow_id"]
    try:
        await data.workflow(console.ready_client(), workflow_id)  # unknown: 404 now, not an empty stream
    except Exception as exc:
        mapped = error_response_for(exc)
        if mapped is None:
            raise
        return json_error(*mapped)
    return StreamingResponse(
        _events(console, workflow_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _events(console: ConsoleState, workflow_id: str) -> AsyncIterator[str]:
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for change in console.client.watch(workflow_id):
                queue.put_nowait(change)
        except WorkflowNotFoundError:
            queue.put_nowait({"expired": True})
        except Exception as exc:  # the stream says so and ends; the browser reconnects
            queue.put_nowait({"error": f"{type(exc).__name__}: {exc}"})
        queue.put_nowait(None)

    console.streams.add(queue)
    console.metrics.streams.inc()
    watcher = asyncio.create_task(pump())
    try:
        yield "retry: 3000\n\n"
        while not console.closing:
            try:
                async with asyncio.timeout(PING_SECONDS):
                    item = await queue.get()
            except TimeoutError:
                yield ": ping\n\n"
                continue
            if item is None:
                yield "event: end\ndata: {}\n\n"
                return
            kind = "signal" if "signal" in item else "error" if "error" in item or "expired" in item else "status"
            yield f"event: {kind}\ndata: {json.dumps(item, ensure_ascii=False, default=str)}\n\n"
    finally:
        watcher.cancel()
        console.streams.discard(queue)
        console.metrics.streams.dec()


# -- actions -------------------------------------------------------------------------------------------------


class BadBody(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadBody(413, f"the request body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadBody(413, f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _form(raw: bytes) -> Body:
    try:
        pairs = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadBody(400, "the form is not UTF-8") from None
    return {key: values[-1] for key, values in pairs.items()}


def _json(raw: bytes) -> Body:
    if not raw.strip():
        return {}
    try:
        value = read_json(raw)  # NaN, 1e999, nesting too deep: bad input, as in the CLI
    except ValueError as exc:
        raise BadBody(400, f"malformed JSON body: {str(exc).removeprefix('is ')}") from None
    if not isinstance(value, dict):
        raise BadBody(400, "the JSON body must be an object")
    return value


def payload_field(body: Body, key: str) -> Any:
    """A payload that a form sends as JSON text (the event editor), or a JSON body as a value."""
    value = body.get(f"{key}_json")
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return read_json(value)
        except ValueError as exc:
            raise BadBody(400, f"{key} {exc}") from None
    return body.get(key)


def text_field(body: Body, key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise BadBody(400, f"{key!r} is required")
        return None
    if not isinstance(value, str):
        raise BadBody(400, f"{key!r} must be a string")
    return value


Act = Callable[[Client, Body], Awaitable[tuple[dict[str, Any], str]]]


async def act(request: Request, perform: Act) -> Response:
    """Check the caller may act (token, cross-site), parse the body, perform, answer JSON or an htmx message."""
    console = state_of(request)
    form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    try:
        raw = await _read_body(request, console.client.settings.max_payload * AS_SENT + BODY_SLACK)
        body = _form(raw) if form else None
    except BadBody as exc:
        return failure(request, exc.status, str(exc))
    refusal = console.policy.check_action(request, body.get("csrf") if body else None)
    if refusal is not None:
        if refusal.wrong_token:
            await console.policy.wrong_token_penalty()
        return failure(request, refusal.status, refusal.message)
    try:
        result, message = await perform(console.ready_client(), body if body is not None else _json(raw))
    except BadBody as exc:
        return failure(request, exc.status, str(exc))
    except Exception as exc:
        mapped = error_response_for(exc)
        if mapped is None:
            raise
        return failure(request, *mapped)
    if _is_htmx(request):
        return HTMLResponse(
            f'<p class="flash ok" role="status">{escape(message)}</p>', headers={"HX-Trigger": "bdurable-changed"}
        )
    return JSONResponse(result)


async def cancel(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]

    async def perform(client: Client, body: Body) -> tuple[dict[str, Any], str]:
        reason = text_field(body, "reason")
        await client.cancel(workflow_id, reason=reason)
        return {"workflow_id": workflow_id, "cancel_requested": True, "reason": reason}, "Cancellation requested."

    return await act(request, perform)


async def resume(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]

    async def perform(client: Client, body: Body) -> tuple[dict[str, Any], str]:
        await client.resume(workflow_id)
        return {"workflow_id": workflow_id, "resumed": True}, "Resumed: the workflow is queued again."

    return await act(request, perform)


async def send_event(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]

    async def perform(client: Client, body: Body) -> tuple[dict[str, Any], str]:
        name = text_field(body, "name", required=True)
        assert name is not None
        await client.send_event(workflow_id, name, payload_field(body, "payload"))
        return {"workflow_id": workflow_id, "event": name, "accepted": True}, f"Event {name!r} sent."

    return await act(request, perform)


async def dlq_retry(request: Request) -> Response:
    entry_id = request.path_params["entry_id"]

    async def perform(client: Client, body: Body) -> tuple[dict[str, Any], str]:
        await client.dlq_retry(entry_id)
        return {"entry_id": entry_id, "retried": True}, f"Entry {entry_id} retried: the task runs again."

    return await act(request, perform)


async def dlq_fail(request: Request) -> Response:
    entry_id = request.path_params["entry_id"]

    async def perform(client: Client, body: Body) -> tuple[dict[str, Any], str]:
        await client.dlq_fail(entry_id)
        return {"entry_id": entry_id, "failed": True}, f"Entry {entry_id} failed: the workflow gets TaskFailedError."

    return await act(request, perform)


async def dlq_purge(request: Request) -> Response:
    async def perform(client: Client, body: Body) -> tuple[dict[str, Any], str]:
        purged = await client.dlq_purge()
        return {"purged": purged}, f"Purged {purged} entr{'y' if purged == 1 else 'ies'}."

    return await act(request, perform)


# -- schedules (INTERFACE §8): the CLI's `schedule list/show/pause/unpause/trigger --json` ----------------------


async def list_schedules(request: Request) -> Response:
    return await guarded(request, data.schedules)


async def get_schedule(request: Request) -> Response:
    schedule_id = request.path_params["schedule_id"]
    return await guarded(request, lambda client: data.schedule(client, schedule_id))


async def pause_schedule(request: Request) -> Response:
    schedule_id = request.path_params["schedule_id"]

    async def perform(client: Client, body: Body) -> tuple[dict[str, Any], str]:
        note = text_field(body, "note")
        await client.pause_schedule(schedule_id, note=note)
        paused = await data.schedule(client, schedule_id)
        return paused, f"Schedule {schedule_id} paused: it fires no more until unpaused."

    return await act(request, perform)


async def unpause_schedule(request: Request) -> Response:
    schedule_id = request.path_params["schedule_id"]

    async def perform(client: Client, body: Body) -> tuple[dict[str, Any], str]:
        await client.unpause_schedule(schedule_id)
        unpaused = await data.schedule(client, schedule_id)
        return unpaused, f"Schedule {schedule_id} unpaused: it fires again from its next time."

    return await act(request, perform)


async def trigger_schedule(request: Request) -> Response:
    """One run now, obeying the overlap policy. The message says which of the three things happened, because
    the id alone does not: a new run started, a run waits behind the one in progress (``buffer_*``,
    ``cancel_other``: its id exists once it starts), or the run in progress carries the trigger (``skip``, or
    ``buffer_one`` with a run already waiting)."""
    schedule_id = request.path_params["schedule_id"]

    async def perform(client: Client, body: Body) -> tuple[dict[str, Any], str]:
        before = await client.get_schedule(schedule_id)
        workflow_id = await client.trigger_schedule(schedule_id)
        link = Markup('<a class="wid" href="/workflows/{}">{}</a>').format(url_id(workflow_id), workflow_id)
        if workflow_id in {firing["workflow_id"] for firing in before.recent}:
            message = Markup(
                "A run is in progress and the overlap policy is {}: no new run started; the run in progress is {}."
            )
            message = message.format(before.overlap, link)
        elif await client.get_state(workflow_id) is None:
            message = Markup("Triggered: run {} starts once the run in progress ends (overlap {}).")
            message = message.format(link, before.overlap)
        else:
            message = Markup("Triggered: started run {}.").format(link)
        return {"schedule_id": schedule_id, "workflow_id": workflow_id}, message

    return await act(request, perform)


class ApiRoute(Route):
    """A route of the API, matched as an API client means it, not as Starlette does by default.

    - On the path as sent (``raw_path``), its ids percent-decoded after matching: an id may hold ``/``, so
      ``/api/workflows/a%2Fcancel`` is the workflow ``a/cancel`` while ``/api/workflows/a/cancel`` is the cancel
      action of ``a``. The decoded path cannot tell them apart.
    - The first route whose path matches answers, whatever the method: a wrong method on an action URL is 405 (with
      ``Allow``), not a later, more general route's read (``GET /api/workflows/a/cancel`` is not the workflow
      ``a/cancel``; ``GET /api/dlq/purge`` is not the entry ``purge``). So the order of :func:`routes` matters:
      the longer paths first.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        raw = scope.get("raw_path")
        if scope["type"] != "http" or raw is None:  # a server without raw_path: the decoded path, as before
            match, child = super().matches(scope)
            return (Match.FULL if match is Match.PARTIAL else match), child
        path = raw.decode("latin-1").partition("?")[0]  # ASGI leaves the query out; some clients do not
        root = quote(scope.get("root_path", ""))
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        match, child = super().matches({**scope, "path": path, "root_path": ""})
        if match is Match.NONE:
            return match, child
        params = dict(child["path_params"])
        for name in self.param_convertors:
            params[name] = unquote(params[name])
        return Match.FULL, {**child, "path_params": params}


def routes() -> list[Route]:
    return [
        ApiRoute("/api/overview", get_overview, methods=["GET"]),
        ApiRoute("/api/workflows", list_workflows, methods=["GET"]),
        ApiRoute("/api/workflows/{workflow_id:path}/history", get_history, methods=["GET"]),
        ApiRoute("/api/workflows/{workflow_id:path}/signals", get_signals, methods=["GET"]),
        ApiRoute("/api/workflows/{workflow_id:path}/stream", stream_workflow, methods=["GET"]),
        ApiRoute("/api/workflows/{workflow_id:path}/cancel", cancel, methods=["POST"]),
        ApiRoute("/api/workflows/{workflow_id:path}/resume", resume, methods=["POST"]),
        ApiRoute("/api/workflows/{workflow_id:path}/events", send_event, methods=["POST"]),
        ApiRoute("/api/workflows/{workflow_id:path}", get_workflow, methods=["GET"]),
        ApiRoute("/api/dlq", list_dead_letters, methods=["GET"]),
        ApiRoute("/api/dlq/purge", dlq_purge, methods=["POST"]),
        ApiRoute("/api/dlq/{entry_id}/retry", dlq_retry, methods=["POST"]),
        ApiRoute("/api/dlq/{entry_id}/fail", dlq_fail, methods=["POST"]),
        ApiRoute("/api/dlq/{entry_id}", get_dead_letter, methods=["GET"]),
        ApiRoute("/api/schedules", list_schedules, methods=["GET"]),
        ApiRoute("/api/schedules/{schedule_id:path}/pause", pause_schedule, methods=["POST"]),
        ApiRoute("/api/schedules/{schedule_id:path}/unpause", unpause_schedule, methods=["POST"]),
        ApiRoute("/api/schedules/{schedule_id:path}/trigger", trigger_schedule, methods=["POST"]),
        ApiRoute("/api/schedules/{schedule_id:path}", get_schedule, methods=["GET"]),
    ]
