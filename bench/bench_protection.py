"""Payload protection and tracing benchmarks: ``python bench/bench_protection.py`` prints three small tables.

* the payload codec alone, per payload and size: sealing and opening as stored by default (plain JSON, zstd above
  4 KiB), encrypted (AES-256-GCM), and the compressors it was chosen among (zlib, zstd, lz4 when installed);
* the tracing hooks while tracing is off (the package missing or not configured: the same shared no-op object),
  per call, against a step's own cost;
* end to end, roles as separate processes against a local redis-server with AOF ``everysec`` (``drain`` and
  ``latency`` of bench/run.py): throughput of 3-task workflows drained by one dispatcher, and start-to-result
  latency of a 1-task workflow, with everything off, with encryption, with tracing (OTLP/HTTP to a collector in
  this process that discards what it gets), and with both.

``--quick`` runs everything smaller (a smoke test of the benchmark; its figures are noisier).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import importlib
import json
import os
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_app
import zstandard
from harness import redis
from run import drain, latency, settings_for

from bdurable.codec import dumps
from bdurable.keyring import Keyring
from bdurable.payloads import PayloadCodec
from bdurable.tracing import NO_TRACING
from bdurable.wire import ErrorRecord, StepClaim, StepDocument, TaskCall, TaskClaim


def per_call_us(operation: Callable[[], object], budget_s: float = 0.3) -> float:
    """Microseconds per call, over as many calls as fit in the budget (after a warm-up)."""
    for _ in range(50):
        operation()
    calls, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < budget_s:
        for _ in range(100):
            operation()
        calls += 100
    return elapsed / calls * 1e6


def payload(size: int) -> str:
    """JSON of an order-like document of about ``size`` bytes (compressible like real payloads)."""
    items = [{"sku": f"sku-{i % 97}", "name": f"widget {i % 13}", "qty": i % 5 + 1, "price": round(i * 0.37, 2),
              "customer": {"email": f"user{i % 50}@example.com", "country": ["DE", "FR", "US"][i % 3]}}
             for i in range(max(1, size // 120))]  # fmt: skip
    return dumps({"order": "o-1", "items": items})


def codec_table(budget: float) -> list[tuple[str, ...]]:
    keyring = Keyring.from_texts([base64.b64encode(os.urandom(32)).decode()])
    configurations = {
        "default (zstd > 4 KiB)": PayloadCodec(),
        "encrypted": PayloadCodec(keyring=keyring),
    }
    rows: list[tuple[str, ...]] = []
    for size in (200, 4_096, 65_536, 1_048_576):
        text = payload(size)
        for name, codec in configurations.items():
            stored = codec.seal(text)
            rows.append((f"{len(text):,} B", name, f"{per_call_us(partial(codec.seal, text), budget):,.1f}",
                         f"{per_call_us(partial(codec.open_text, stored), budget):,.1f}",
                         f"{len(stored) / len(text):.2f}"))  # fmt: skip
        data = text.encode()
        compressors: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
            "zlib-1": (lambda b: zlib.compress(b, 1), zlib.decompress),
            "zlib-6": (lambda b: zlib.compress(b, 6), zlib.decompress),
            "zstd-3": (zstandard.ZstdCompressor(level=3).compress, zstandard.ZstdDecompressor().decompress),
        }
        try:  # measured when installed, never a dependency
            lz4 = importlib.import_module("lz4.frame")
            compressors["lz4"] = (lz4.compress, lz4.decompress)
        except ImportError:
            pass
        if size >= 4_096:
            for name, (pack, unpack) in compressors.items():
                packed = pack(data)
                packing = per_call_us(partial(pack, data), budget)
                rows.append((f"{len(text):,} B", f"  {name} alone", f"{packing:,.1f}",
                             f"{per_call_us(partial(unpack, packed), budget):,.1f}",
                             f"{len(packed) / len(data):.2f}"))  # fmt: skip
    return rows


def hooks_table(budget: float) -> list[tuple[str, ...]]:
    claim = StepClaim(False, "wf-1", "1", "flow", "1", "{}", -1, -1, [], {})
    document = StepDocument([], "RUNNING", "", None)
    task = TaskClaim(False, "wf-1", 1, "2", TaskCall("t", "{}", "default", 0, 3, 1000, 0, "raise"))
    error = ErrorRecord("ValueError", "failed")

    def step_hooks() -> None:
        with NO_TRACING.step(claim) as span:
            span.annotate(document)

    def attempt_hooks() -> None:
        with NO_TRACING.attempt(task) as span:
            span.failed(error)

    return [
        ("a step's hooks (span, annotate)", f"{per_call_us(step_hooks, budget) * 1000:,.0f} ns"),
        ("a task attempt's hooks", f"{per_call_us(attempt_hooks, budget) * 1000:,.0f} ns"),
        (
            "client.start's hook",
            f"{per_call_us(lambda: NO_TRACING.start_workflow('f', 'w', '1'), budget) * 1000:,.0f} ns",
        ),
    ]


@contextmanager
def collector() -> Iterator[int]:
    """An OTLP/HTTP endpoint that accepts every export and discards it (the cost measured is the processes')."""

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def tracing_env(port: int | None) -> Iterator[None]:
    """OTEL_* variables for this process and the role processes it spawns (none: tracing off)."""
    names = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    saved = {name: os.environ.pop(name, None) for name in names}
    if port is not None:
        os.environ.update(
            dict(zip(names, ("otlp", "http/protobuf", f"http://127.0.0.1:{port}/v1/traces"), strict=True))
        )
    try:
        yield
    finally:
        for name in names:
            os.environ.pop(name, None)
            if saved[name] is not None:
                os.environ[name] = saved[name]  # type: ignore[assignment]  # checked just above


async def end_to_end(quick: bool) -> list[tuple[str, ...]]:
    count, samples = (300, 60) if quick else (3000, 400)
    key = base64.b64encode(os.urandom(32)).decode()
    rows: list[tuple[str, ...]] = []
    with redis() as server, collector() as port:
        for name, keys, traced in (("off", (), False), ("encryption", (key,), False), ("tracing", (), True),
                                   ("encryption + tracing", (key,), True)):  # fmt: skip
            with tracing_env(port if traced else None):
                base = settings_for(server.url, encryption_keys=keys)
                drained = await drain(base, [server.url], bench_app.three_tasks, 3, count, concurrency=50)
                timed = await latency(dataclasses.replace(base, prefix=base.prefix + "l"), samples)
            rows.append((name, f"{drained['per_s']:,.0f}", f"{drained['dispatcher_cpu']:.2f}",
                         f"{timed['p50_ms']:.2f}", f"{timed['p99_ms']:.2f}"))  # fmt: skip
        NO_TRACING.flush()
        _flush_own_spans()  # this process's client spans, before the collector goes away
    return rows


def _flush_own_spans() -> None:
    try:
        from opentelemetry import trace
    except ImportError:
        return
    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if force_flush is not None:
        force_flush(5000)


def table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test; noisier figures)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    budget = 0.05 if args.quick else 0.3
    codec_rows = codec_table(budget)
    hook_rows = hooks_table(budget)
    e2e_rows = asyncio.run(end_to_end(args.quick))
    if args.json:
        print(json.dumps({"codec": codec_rows, "hooks": hook_rows, "end_to_end": e2e_rows}, indent=2))
        return
    print(
        table("Payload codec, per payload", ("payload", "stored as", "seal us", "open us", "stored/plain"), codec_rows)
    )
    print()
    print(table("Tracing off (not installed, or not configured): the hooks, per call", ("hook", "cost"), hook_rows))
    print()
    print(table("End to end (one dispatcher, separate processes, AOF everysec)",
                ("configuration", "3-task workflows/s", "dispatcher cores", "latency p50 ms", "p99 ms"),
                e2e_rows))  # fmt: skip


if __name__ == "__main__":
    main()
