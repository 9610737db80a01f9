"""OpenTelemetry tracing, optional: ``pip install "b-durable[otel]"`` and configure it with ``OTEL_*`` variables.

One trace follows a workflow from ``client.start`` through every step and task attempt, across processes and
days: the W3C ``traceparent`` of each span that later work continues is stored in Redis beside that work (the
workflow's hash, each task call's hash, a child's hash), and whoever runs the work next starts its span there.

    StartWorkflow:<name>            client.start (child of the caller's current span, if any)
      RunWorkflow:<name>            one per step, whichever dispatcher runs it, however much later
        StartTask:<task>            a task call the step made
          RunTask:<task>            one per attempt: retries are siblings, each with its attempt number
        StartChildWorkflow:<name>   a child workflow the step started
          RunWorkflow:<name>        the child's steps
    SendEvent:<event>               client.send_event (the caller's trace), linked to the workflow's trace

Sleeps, event waits and signals a step makes are events of its ``RunWorkflow`` span. Errors are recorded on the
span that met them (a failed attempt, a failed workflow), by type and message; with encryption keys set, messages
are left out, as payloads they may quote must not leave in clear.

Tracing is off, at no cost, when the package is not installed or nothing is configured: every hook is then a
shared no-op object (no allocation, no import of OpenTelemetry, no Redis field). "Configured" means an
application set a tracer provider itself (``opentelemetry-instrument``, its own SDK setup, a test's in-memory
exporter), or an exporter is named in the environment (``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): the SDK is then set up from those variables, batched, with the
``service.name`` ``OTEL_SERVICE_NAME`` gives, or ``bdurable-<role>``.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Any, Protocol

import structlog

from bdurable.wire import ErrorRecord, StepClaim, StepDocument, TaskClaim

__all__ = ["NO_TRACING", "Hooks", "SpanHooks", "Tracing", "add_trace_ids", "detect_tracing"]

log = structlog.get_logger("bdurable.tracing")


class SpanHooks(Protocol):
    """What the engine does with a span it is in (each a no-op while tracing is off)."""

    @property
    def traceparent(self) -> str:
        """The span's W3C ``traceparent`` (to store beside work that continues it), '' while tracing is off."""
        ...

    def link(self, traceparent: str) -> None: ...

    def annotate(self, document: StepDocument) -> StepDocument: ...

    def failed(self, error: ErrorRecord, *, retryable: bool = False) -> None: ...


Hooks = AbstractContextManager[SpanHooks]


class _NoSpan:
    """What every hook returns while tracing is off: a context manager that is its own span, doing nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    @property
    def traceparent(self) -> str:
        return ""

    def link(self, traceparent: str) -> None:
        return None

    def annotate(self, document: StepDocument) -> StepDocument:
        return document

    def failed(self, error: ErrorRecord, *, retryable: bool = False) -> None:
        return None


_NO_SPAN = _NoSpan()


class Tracing:
    """The engine's tracing hooks; this base class is tracing off (see :data:`NO_TRACING`)."""

    enabled = False

    def start_workflow(self, name: str, workflow_id: str, version: str) -> Hooks:
        """Around ``client.start``: its span's ``traceparent`` is stored with the workflow."""
        return _NO_SPAN

    def send_event(self, workflow_id: str, name: str) -> Hooks:
        """Around ``client.send_event``; ``link(traceparent)`` links it to the workflow's trace."""
        return _NO_SPAN

    def publish_event(self, name: str) -> Hooks:
        return _NO_SPAN

    def step(self, claim: StepClaim) -> Hooks:
        """Around one workflow step; ``annotate(document)`` gives each new task and child call its own context."""
        return _NO_SPAN

    def attempt(self, claim: TaskClaim) -> Hooks:
        """Around one task attempt; ``failed(error)`` records how it failed."""
        return _NO_SPAN

    def flush(self) -> None:
        """Export what is buffered (a role that stops calls it)."""


NO_TRACING = Tracing()


def _exporter_named() -> bool:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if names:
        return names != "none"
    return any(os.environ.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def detect_tracing(*, service: str = "bdurable", redact: bool = False) -> Tracing:
    """Tracing as this process is set up: on with a configured OpenTelemetry, else :data:`NO_TRACING`.

    ``redact``: leave error messages out of spans (payloads are encrypted, and messages may quote them).
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return NO_TRACING
    try:
        from opentelemetry import trace
    except ImportError:
        return NO_TRACING
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.NoOpTracerProvider):
        return NO_TRACING
    if isinstance(provider, trace.ProxyTracerProvider):  # nobody configured tracing in this process
        if not _exporter_named():
            return NO_TRACING
        configured = _configure_from_environment(service)
        if configured is None:
            return NO_TRACING
        provider = configured
    from bdurable.otel import OtelTracing  # the half that needs OpenTelemetry, imported only when it is on

    return OtelTracing(provider, redact=redact)


def _configure_from_environment(service: str) -> Any:
    """A batching SDK tracer provider with the exporters of ``OTEL_TRACES_EXPORTER`` (default ``otlp``), set as
    the global one; ``None`` (and a warning) when the SDK or an exporter is not installed."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        log.warning("OTEL_* variables are set but opentelemetry-sdk is missing: pip install 'b-durable[otel]'")
        return None
    exporters: list[SpanExporter] = []
    for name in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").lower().split(","):
        name = name.strip()
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name in ("otlp", "otlp_proto_http", "otlp_proto_grpc"):
            protocol = (
                os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or ("grpc" if name == "otlp_proto_grpc" else "http/protobuf")
            )
            try:
                if protocol == "grpc":
                    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]  # optional
                        OTLPSpanExporter as GrpcExporter,
                    )

                    exporters.append(GrpcExporter())
                else:
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                    exporters.append(OTLPSpanExporter())
            except ImportError as exc:
                log.warning("the OTLP exporter is not installed: pip install 'b-durable[otel]'", error=str(exc))
        elif name and name != "none":
            log.warning("unknown OTEL_TRACES_EXPORTER entry, ignored", exporter=name)
    if not exporters:
        return None
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return trace.get_tracer_provider()


def add_trace_ids(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: ``trace_id`` and ``span_id`` of the current span, when there is one.

    ``bdurable`` processes install it when OpenTelemetry is importable; an application with its own structlog
    configuration can add it to its processors.
    """
    try:
        from opentelemetry import trace
    except ImportError:
        return event
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event
