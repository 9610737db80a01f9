"""Tracing across processes (docs/operations.md, "Tracing"): a workflow started by the ``bdurable`` CLI and run by a
real ``bdurable dispatcher`` process is one trace, read back from the processes' OTLP exports.

The processes export over OTLP/HTTP (``OTEL_*`` variables, as an operator would set them) to a small collector
in this test, which decodes the protobuf requests with OpenTelemetry's own message classes. The test process
itself never turns tracing on, so no other test is traced.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from support import RoleProcesses, eventually, token

from bdurable import Client, Settings

pytestmark = pytest.mark.slow


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    service: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    events: list[tuple[str, dict[str, Any]]]
    error: bool


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


@dataclass
class Collector:
    """An OTLP/HTTP trace receiver on a loopback port: every span it was sent."""

    spans: list[Span] = field(default_factory=list)
    port: int = 0

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Span(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            service=str(resource.get("service.name")),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                            events=[(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in span.events],
                            error=span.status.code == 2,  # STATUS_CODE_ERROR
                        )
                    )

    def named(self, name: str) -> list[Span]:
        return [span for span in self.spans if span.name == name]


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            found.receive(body)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


def otel_env(collector: Collector) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{collector.port}/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }


def run_cli(processes: RoleProcesses, env: dict[str, str], *args: str) -> int:
    process = processes.start(*args, **env)
    return process.wait(timeout=60)


async def test_one_trace_follows_a_workflow_across_processes_with_retries_sleep_event_and_child(
    settings: Settings, processes: RoleProcesses, collector: Collector
) -> None:
    env = otel_env(collector)
    dispatcher = processes.start("dispatcher", "--app", "protection_app", **env)
    processes.start("scheduler", **env)
    processes.start("signal-bus", **env)
    workflow_id, secret = f"traced-{token()}", token()
    started = f'{{"secret": "{secret}"}}'

    async def start() -> bool:  # by name, from another process, once the dispatcher has registered it
        code = await asyncio.to_thread(
            run_cli, processes, env, "start", "everything", "--input", started, "--id", workflow_id
        )
        return code == 0

    await eventually(start, timeout=30, interval=0.5)
    async with Client(settings=settings) as client:
        await eventually(lambda: _status(client, workflow_id, "AWAITING_EVENT"), timeout=30)
        code = await asyncio.to_thread(run_cli, processes, env, "send-event", workflow_id, "go", "--payload", "1")
        assert code == 0
        output = await client.result(workflow_id, timeout=30)
    assert output["secret"] == secret

    def complete() -> bool:
        return (
            bool(collector.named("RunWorkflow:child"))
            and bool(collector.named("SendEvent:go"))
            and any(
                span.attributes.get("bdurable.status") == "COMPLETED"
                for span in collector.named("RunWorkflow:everything")
            )
        )

    await eventually(complete, timeout=30, interval=0.1)
    [start_span] = collector.named("StartWorkflow:everything")
    trace = start_span.trace_id
    assert start_span.parent_id == ""  # the CLI had no span of its own: the workflow's trace begins here
    assert start_span.attributes["bdurable.workflow_id"] == workflow_id

    # Every step, on the dispatcher process, is a new span of the same trace, child of the start.
    steps = collector.named("RunWorkflow:everything")
    assert len(steps) >= 4
    assert {(s.trace_id, s.parent_id, s.service) for s in steps} == {(trace, start_span.span_id, "bdurable-dispatcher")}
    step_ids = {s.span_id for s in steps}

    # A task call begins in a step; each attempt is its child, a retry a sibling with its number and its error.
    [call] = collector.named("StartTask:protection_app.flaky")
    assert call.trace_id == trace
    assert call.parent_id in step_ids
    attempts = sorted(collector.named("RunTask:protection_app.flaky"), key=lambda s: s.attributes["bdurable.attempt"])
    assert [a.attributes["bdurable.attempt"] for a in attempts] == [1, 2]
    assert {(a.trace_id, a.parent_id) for a in attempts} == {(trace, call.span_id)}
    assert attempts[0].error
    assert not attempts[1].error
    assert ("exception", {"exception.type": "ValueError", "bdurable.retryable": True,
                          "exception.message": f"first attempt fails for {secret}"}) in attempts[0].events  # fmt: skip
    [doomed] = collector.named("RunTask:protection_app.doomed")
    assert doomed.error
    assert doomed.trace_id == trace

    # The sleep, the event wait and the signal are events of the steps that made them.
    events = {name for s in steps for name, _ in s.events}
    assert {"sleep", "wait_for_event", "signal"} <= events

    # The event, sent from another process in a trace of its own, is linked to the workflow's trace.
    [sent] = collector.named("SendEvent:go")
    assert (trace, start_span.span_id) in sent.links

    # The child: started in a step of the parent, its own steps continue the same trace under that start.
    [child_start] = collector.named("StartChildWorkflow:child")
    assert child_start.trace_id == trace
    assert child_start.parent_id in step_ids
    child_steps = collector.named("RunWorkflow:child")
    assert {(s.trace_id, s.parent_id) for s in child_steps} == {(trace, child_start.span_id)}

    # The dispatcher's log lines carry the trace and span they were written in.
    lines = [json.loads(line) for line in processes.log_of(dispatcher).splitlines() if line.startswith("{")]
    failed = [
        line for line in lines if line.get("event") == "task attempt failed" and line.get("task", "").endswith("flaky")
    ]
    assert failed
    assert failed[0]["trace_id"] == trace
    assert failed[0]["span_id"] == attempts[0].span_id


async def _status(client: Client, workflow_id: str, status: str) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and state.status == status
