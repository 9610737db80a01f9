"""structlog configuration for the role processes and the CLI.

JSON lines when the output is not a terminal, the console renderer when it is (``BDURABLE_LOG_FORMAT``
overrides). Context (role, worker, workflow_id, step, task, attempt) is bound through contextvars, so every
line written while handling a workflow carries it. Applications embedding b-durable keep their own
structlog configuration: this is only applied by the ``bdurable`` processes.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["configure_logging"]


def configure_logging(*, level: str = "info", fmt: str | None = None, stream: Any = None) -> None:
    output = stream or sys.stderr
    if fmt is None:
        fmt = "console" if output.isatty() else "json"
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"invalid log level {level!r}")
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=output.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if fmt == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )
