"""structlog configuration for the role processes and the CLI.

JSON lines when the output is not a terminal, the console renderer when it is (``BDURABLE_LOG_FORMAT``
overrides). Context (role, worker, workflow_id, step, task, attempt) is bound through contextvars, so every
line written while handling a workflow carries it, and, with tracing on, the ``trace_id`` and ``span_id`` of the
span it belongs to. Applications embedding b-durable keep their own structlog configuration: this is only applied
by the ``bdurable`` processes (``bdurable.tracing.add_trace_ids`` is the processor to add to one's own).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["configure_logging"]


def _trace_ids() -> list[Any]:
    """The processor adding ``trace_id``/``span_id`` of the current span, when OpenTelemetry is installed (it costs
    nothing to leave out otherwise)."""
    try:
        import opentelemetry.trace  # noqa: F401  # only whether it is installed
    except ImportError:
        return []
    from bdurable.tracing import add_trace_ids

    return [add_trace_ids]


def _traceback_without_locals() -> Any:
    try:
        import rich  # noqa: F401  # only whether it is installed (the CLI's dependency typer brings it)
    except ImportError:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


def configure_logging(*, level: str = "info", fmt: str | None = None, stream: Any = None) -> None:
    output = stream or sys.stderr
    if fmt is None:
        fmt = "console" if output.isatty() else "json"
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"invalid log level {level!r}")
    renderer: Any = (
        # Tracebacks without the frames' locals: those may hold opened (decrypted) payloads.
        structlog.dev.ConsoleRenderer(colors=output.isatty(), exception_formatter=_traceback_without_locals())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *_trace_ids(),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if fmt == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )
