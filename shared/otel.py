"""The OpenTelemetry half of :mod:`bdurable.tracing`, imported only when tracing is on (it needs the ``otel``
extra). The span tree and what each span carries are described there."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bdurable.tracing import Hooks, Tracing
from bdurable.wire import (
    ChildCommand,
    ErrorRecord,
    EventCommand,
    NewCall,
    SignalCommand,
    SleepCommand,
    StepClaim,
    StepDocument,
    TaskClaim,
    TaskCommand,
)

__all__ = ["OtelTracing", "context_of", "traceparent_of"]

_PROPAGATOR = TraceContextTextMapPropagator()
_VERSION = "0.1.0"


def context_of(traceparent: str) -> OtelContext | None:
    """The OpenTelemetry context a stored ``traceparent`` names (``None``: none stored, a new trace begins)."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


def traceparent_of(span: Span) -> str:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def _span_context(traceparent: str) -> SpanContext | None:
    context = context_of(traceparent)
    if context is None:
        return None
    found = trace.get_current_span(context).get_span_context()
    return found if found.is_valid else None


class _Span:
    """One live span, with the engine's hooks on it."""

    def __init__(self, tracing: OtelTracing, span: Span) -> None:
        self.tracing = tracing
        self.span = span

    @property
    def traceparent(self) -> str:
        return traceparent_of(self.span)

    def link(self, traceparent: str) -> None:
        """Link to the span that ``traceparent`` names (an event sent to a workflow: the workflow's trace)."""
        found = _span_context(traceparent)
        if found is not None:
            self.span.add_link(found, {"bdurable.link": "workflow"})

    def failed(self, error: ErrorRecord, *, retryable: bool = False) -> None:
        described = error.type if self.tracing.redact else f"{error.type}: {error.message}"
        self.span.set_status(Status(StatusCode.ERROR, described))
        attributes: dict[str, Any] = {"exception.type": error.type, "bdurable.retryable": retryable}
        if not self.tracing.redact:
            attributes["exception.message"] = error.message
        self.span.add_event("exception", attributes)

    def annotate(self, document: StepDocument) -> StepDocument:
        """The step's document with a context for each new task and child call (their spans begin here), its
        timers, event waits and signals as events of this span, and its outcome recorded."""
        calls: list[NewCall] = [self._call(call) for call in document.calls]
        status = document.outcome.status if document.outcome is not None else document.status
        self.span.set_attribute("bdurable.status", str(status))
        if document.outcome is not None and document.outcome.error is not None and status == "FAILED":
            self.failed(document.outcome.error)
        return dataclasses.replace(document, calls=calls)

    def _call(self, call: NewCall) -> NewCall:
        parent = trace.set_span_in_context(self.span)
        tracer = self.tracing.tracer
        if isinstance(call, TaskCommand):
            started = tracer.start_span(
                f"StartTask:{call.name}", context=parent, kind=SpanKind.PRODUCER,
                attributes={"bdurable.seq": call.seq, "bdurable.task": call.name, "bdurable.queue": call.queue},
            )  # fmt: skip
            started.end()
            return dataclasses.replace(call, trace=traceparent_of(started))
        if isinstance(call, ChildCommand):
            started = tracer.start_span(
                f"StartChildWorkflow:{call.name}", context=parent, kind=SpanKind.PRODUCER,
                attributes={"bdurable.seq": call.seq, "bdurable.workflow": call.name,
                            "bdurable.child_id": call.child_id, "bdurable.version": call.version},
            )  # fmt: skip
            started.end()
            return dataclasses.replace(call, trace=traceparent_of(started))
        if isinstance(call, SleepCommand):
            timer: dict[str, Any] = {"bdurable.seq": call.seq}
            if call.delay_ms is not None:
                timer["bdurable.delay_ms"] = call.delay_ms
            if call.due_ms is not None:
                timer["bdurable.due_ms"] = call.due_ms
            self.span.add_event("sleep", timer)
        elif isinstance(call, EventCommand):
            self.span.add_event("wait_for_event", {"bdurable.seq": call.seq, "bdurable.event": call.name})
        elif isinstance(call, SignalCommand):
            self.span.add_event("signal", {"bdurable.seq": call.seq, "bdurable.signal": call.name})
        return call


class OtelTracing(Tracing):
    """Tracing on: spans through the given tracer provider."""

    enabled = True

    def __init__(self, provider: TracerProvider, *, redact: bool) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("bdurable", _VERSION)
        self.redact = redact

    @contextmanager
    def _span(self, name: str, *, kind: SpanKind, traceparent: str | None = None, **attributes: Any) -> Iterator[_Span]:
        context = context_of(traceparent) if traceparent is not None else None
        with self.tracer.start_as_current_span(
            name, context=context, kind=kind, attributes={f"bdurable.{k}": v for k, v in attributes.items()}
        ) as span:
            yield _Span(self, span)

    def start_workflow(self, name: str, workflow_id: str, version: str) -> Hooks:
        return self._span(f"StartWorkflow:{name}", kind=SpanKind.PRODUCER, workflow_id=workflow_id, workflow=name,
                          version=version)  # fmt: skip

    def send_event(self, workflow_id: str, name: str) -> Hooks:
        return self._span(f"SendEvent:{name}", kind=SpanKind.PRODUCER, workflow_id=workflow_id, event=name)

    def publish_event(self, name: str) -> Hooks:
        return self._span(f"PublishEvent:{name}", kind=SpanKind.PRODUCER, event=name)

    def step(self, claim: StepClaim) -> Hooks:
        return self._span(
            f"RunWorkflow:{claim.name}", kind=SpanKind.CONSUMER, traceparent=claim.trace,
            workflow_id=claim.workflow_id, workflow=claim.name, version=claim.version,
            replayed=claim.inbox_start < 0 and claim.committed_len >= 0,
        )  # fmt: skip

    def attempt(self, claim: TaskClaim) -> Hooks:
        call = claim.call
        return self._span(
            f"RunTask:{call.name}", kind=SpanKind.CONSUMER, traceparent=call.trace, workflow_id=claim.workflow_id,
            seq=claim.seq, task=call.name, attempt=call.attempt, max_attempts=call.max_attempts,
        )  # fmt: skip

    def flush(self) -> None:
        force_flush = getattr(self.provider, "force_flush", None)
        if force_flush is not None:
            force_flush(5000)
