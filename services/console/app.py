"""The console's web application: routes, health, metrics, security headers.

One ASGI wrapper does what every response needs: refuse a foreign ``Host`` when bound to loopback, add the
security headers (a Content-Security-Policy that allows only the console's own scripts and styles, no
framing, no sniffing), and count each request by route and status for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bdurable.services.console import api, pages
from bdurable.services.console.api import BadBody, failure, json_error
from bdurable.services.console.state import HERE, ConsoleState, state_of

__all__ = ["create_app"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
# The request methods a metric's label takes as they are; any other counts as "other": a label set stays bounded.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNGUARDED = ("/livez", "/readyz", "/metrics")  # probes and scrapers address the pod, not a loopback name


async def livez(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    console = state_of(request)
    if not console.connected:
        return PlainTextResponse("not connected to redis yet\n", status_code=503)
    try:
        async with asyncio.timeout(1.0):
            await console.client.store.ping()
    except TimeoutError:
        return PlainTextResponse("redis unavailable: no answer within 1 s\n", status_code=503)
    except Exception as exc:
        return PlainTextResponse(f"redis unavailable: {exc}\n", status_code=503)
    return PlainTextResponse("ok\n")


async def metrics(request: Request) -> Response:
    return Response(state_of(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/") or exc.status_code == 405:
        response = json_error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # a 405's Allow
        return response
    return pages.render(request, "error.html", status=exc.status_code, title=f"Error {exc.status_code}",
                        message=str(exc.detail))  # fmt: skip


async def bad_body(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadBody)
    return failure(request, exc.status, str(exc))


class Guard:
    """Host check, security headers and request metrics around the whole application."""

    def __init__(self, app: ASGIApp, console: ConsoleState) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["path"] not in UNGUARDED:
            refusal = self.console.policy.check_host(headers.get(b"host", b"").decode("latin-1"))
            if refusal is not None:
                await JSONResponse({"error": refusal.message}, status_code=refusal.status)(scope, receive, send)
                return
        began, status = time.perf_counter(), 500

        async def respond(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, respond)
        finally:
            route: Any = scope.get("route")
            label = str(getattr(route, "path", "other"))
            metrics = self.console.metrics
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"  # anyone may send any word
            metrics.child(metrics.requests, label, method, str(status)).inc()
            if not label.endswith("/stream"):
                metrics.child(metrics.request_duration, label).observe(time.perf_counter() - began)


def create_app(console: ConsoleState) -> ASGIApp:
    routes: list[BaseRoute] = [
        *pages.routes(),
        *api.routes(),
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, BadBody: bad_body})
    app.state.console = console
    return Guard(app, console)
