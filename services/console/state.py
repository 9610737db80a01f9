"""What the console's request handlers share: the client, the access policy, metrics, templates, open streams."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from starlette.requests import Request

from bdurable.client import Client
from bdurable.errors import (
    DeadLetterNotFoundError,
    DeadLetterNotParkedError,
    DurableError,
    InvalidInputError,
    PayloadTooLargeError,
    ScheduleNotFoundError,
    UnknownWorkflowError,
    VersionNotLiveError,
    WorkflowAlreadyExistsError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
    WorkflowNotHaltedError,
)
from bdurable.runtime.metrics import Metrics
from bdurable.services.console.access import AccessPolicy
from bdurable.services.console.timeline import format_duration
from bdurable.store import REDIS_ERRORS

__all__ = ["HERE", "ConsoleState", "NotReady", "error_response_for", "state_of", "url_id"]

HERE = Path(__file__).resolve().parent  # resolved: a strict editable install links each file


class NotReady(Exception):
    """The console has not reached Redis yet (or lost it): 503."""


def error_response_for(exc: BaseException) -> tuple[int, str] | None:
    """The HTTP status and message of an error the library raised, or ``None`` for an unexpected one."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, WorkflowFinishedError | WorkflowNotHaltedError | DeadLetterNotParkedError | VersionNotLiveError):
        return 409, message  # before not-found: send_event's "finished" error is both
    if isinstance(exc, WorkflowNotFoundError | DeadLetterNotFoundError | ScheduleNotFoundError):
        return 404, message
    if isinstance(exc, PayloadTooLargeError):
        return 413, message
    if isinstance(exc, InvalidInputError | UnknownWorkflowError | WorkflowAlreadyExistsError):
        return 400, message
    if isinstance(exc, NotReady):
        return 503, message
    if isinstance(exc, REDIS_ERRORS):
        return 503, f"Redis is unavailable: {message}"
    if isinstance(exc, DurableError):
        return 400, message
    return None


def _pretty(value: Any) -> str:
    """A payload as indented JSON text (escaped by the template like any other text)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _when(text: str | None) -> str:
    """An ISO time as ``2026-12-07 08:00:00`` (UTC), for tables."""
    if not text:
        return ""
    return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S")


def _in_zone(text: str | None, zone: str) -> str:
    """An ISO time as the wall-clock time of a time zone (a cron schedule's own), with the zone's abbreviation:
    ``Mon 2026-12-07 09:00:00 CET``. A cron expression means times in its schedule's zone, so this is the time a
    person recognises (``0 9 * * MON-FRI`` reads as 09:00); the page shows the UTC time beside it. An unknown
    zone falls back to UTC rather than failing the page."""
    if not text:
        return ""
    try:
        moment = datetime.fromisoformat(text).astimezone(ZoneInfo(zone))
    except (ValueError, ZoneInfoNotFoundError):
        return _when(text)
    return moment.strftime("%a %Y-%m-%d %H:%M:%S %Z")


def _age_ms(value: int) -> str:
    return "" if value < 0 else format_duration(value / 1000)


def url_id(value: str) -> str:
    """An id as one URL path segment (``/`` and ``?`` included: ids may hold any character)."""
    return quote(value, safe="")


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is text unless a template says otherwise (none does for payloads)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = _pretty
    env.filters["when"] = _when
    env.filters["in_zone"] = _in_zone
    env.filters["age_ms"] = _age_ms
    env.globals["url_id"] = url_id
    return env


@dataclass
class ConsoleState:
    client: Client
    policy: AccessPolicy
    metrics: Metrics
    templates: jinja2.Environment = field(default_factory=make_templates)
    connected: bool = False
    streams: set[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=set)
    closing: bool = False

    def ready_client(self) -> Client:
        if not self.connected:
            raise NotReady("the console has not reached Redis yet: retrying")
        return self.client

    def close_streams(self) -> None:
        """End every live stream (the console is stopping)."""
        self.closing = True
        for queue in list(self.streams):
            queue.put_nowait(None)


def state_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state
