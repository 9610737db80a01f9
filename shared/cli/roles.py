"""The role commands: ``dispatcher``, ``scheduler``, ``reaper``, ``signal-bus``, ``console``.

Each builds its settings (environment, then options), configures logging, and runs the role's loop until
SIGTERM or SIGINT, when it drains and exits 0. Role classes are imported lazily, by name: ``bdurable``
itself never imports a service at import time, and a build without a role says so in one line.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import os
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

import structlog
import typer

from bdurable.cli.common import (
    CliError,
    Debug,
    Prefix,
    RedisUrl,
    client_settings,
    handles_errors,
    import_app_modules,
)
from bdurable.config import Settings
from bdurable.runtime.service import Stopping

__all__ = ["PARENT_ENV", "ROLES", "register", "role_available"]

PARENT_ENV = "BDURABLE_DEV_PARENT"  # set by `bdurable dev`: stop when this pid is no longer our parent

# command name -> (module, class): where each role's loop lives.
ROLES: dict[str, tuple[str, str]] = {
    "dispatcher": ("bdurable.services.dispatcher", "Dispatcher"),
    "scheduler": ("bdurable.services.scheduler", "Scheduler"),
    "reaper": ("bdurable.services.reaper", "Reaper"),
    "signal-bus": ("bdurable.services.signal_bus", "SignalBus"),
    "console": ("bdurable.services.console", "Console"),
}

log = structlog.get_logger("bdurable.cli")


class Role(Protocol):
    """What the CLI needs of a role: a loop that runs until asked to stop."""

    def run(self, stopping: Stopping) -> Awaitable[None]: ...


Retention = Annotated[
    str | None,
    typer.Option(
        "--retention",
        help="Keep finished workflows this long (default 7 days); set where a workflow finishes, so give "
        "every process the same.",
    ),
]
HeartbeatInterval = Annotated[
    str | None, typer.Option("--heartbeat-interval", help="Dispatcher heartbeat period (default 2s).")
]
HeartbeatTimeout = Annotated[
    str | None,
    typer.Option("--heartbeat-timeout", help="Silence after which a dispatcher is declared dead (default 10s)."),
]
WaitReplicas = Annotated[
    int | None,
    typer.Option("--wait-replicas", min=0, help="Commits wait for this many replicas (default 0)."),
]
MaxPayload = Annotated[str | None, typer.Option("--max-payload", help="Largest payload, e.g. 64KiB (default 1MiB).")]
# Payload protection: the keys come from BDURABLE_ENCRYPTION_KEYS only (an option would show them in `ps`).
CompressAbove = Annotated[
    str | None,
    typer.Option("--compress-above", help="Compress larger payloads (zstd), e.g. 16KiB, or off (default 4KiB)."),
]
Codec = Annotated[
    str | None, typer.Option("--codec", help="Custom payload codec, module:object with encode/decode (bytes).")
]
LogFormat = Annotated[
    str | None, typer.Option("--log-format", help="console or json (default: console on a terminal).")
]
LogLevel = Annotated[str | None, typer.Option("--log-level", help="debug, info, warning or error (default info).")]
Shards = Annotated[
    int | None,
    typer.Option("--shards", min=1, max=1024, help="Shards of the keyspace; the same for every process (default 1)."),
]
DrainTimeout = Annotated[
    str | None,
    typer.Option(
        "--drain-timeout",
        help="On SIGTERM, let work in flight finish this long, then hand the rest back (default 25s).",
    ),
]
LivenessTimeout = Annotated[
    str | None,
    typer.Option("--liveness-timeout", help="/livez fails when the role's loops do not respond this long (30s)."),
]
RunCacheBytes = Annotated[
    str | None,
    typer.Option("--run-cache-bytes", help="Payload bytes of workflow runs kept in memory between steps (256MiB)."),
]
MetricsPort = Annotated[
    int | None,
    typer.Option("--metrics-port", min=0, max=65535, help="Serve /metrics, /livez and /readyz on this port."),
]

MetricsHost = Annotated[
    str | None,
    typer.Option("--metrics-host", help="Address of the metrics port (default 0.0.0.0; 127.0.0.1 keeps it local)."),
]
EventLoop = Annotated[
    str | None, typer.Option("--event-loop", help="asyncio or uvloop (the b-durable[uvloop] extra; default asyncio).")
]


def role_available(command: str) -> bool:
    """Whether this build ships the role (``bdurable dev`` skips the ones it does not)."""
    module, name = ROLES[command]
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def _role_class(command: str) -> Callable[..., Role]:
    module, name = ROLES[command]
    if not role_available(command):
        raise CliError(f"the {command} role is not available in this build of b-durable")
    factory: Callable[..., Role] = getattr(importlib.import_module(module), name)
    return factory


def _settings(redis_url: str | None, prefix: str | None, **options: Any) -> Settings:
    return client_settings(redis_url, prefix, **options)


def _serve(command: str, settings: Settings, build: Callable[[], Role]) -> None:
    """Configure logging, build the role and run it until a signal; a crash is logged, then reported."""
    from bdurable.runtime.heap import settle_heap
    from bdurable.runtime.logging import configure_logging
    from bdurable.runtime.service import run_event_loop, run_until_signalled

    try:
        configure_logging(level=settings.log_level, fmt=settings.log_format)
    except ValueError as exc:
        raise CliError(f"invalid setting: {exc}") from None
    if settings.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise CliError("BDURABLE_EVENT_LOOP=uvloop, but uvloop is not installed: pip install 'b-durable[uvloop]'")
    role = build()
    parent = os.environ.pop(PARENT_ENV, None)  # popped: the app's own subprocesses must not inherit it
    settle_heap()  # the app is imported: what lives now lives as long as the process (bdurable.runtime.heap)

    async def main(stopping: Stopping) -> None:
        log.debug(
            "event loop",
            event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
            gc_frozen=gc.get_freeze_count(),
            gc_thresholds=list(gc.get_threshold()),
        )
        watchdog = asyncio.create_task(_watch_parent(int(parent), stopping)) if parent else None
        try:
            await role.run(stopping)
        finally:
            if watchdog is not None:
                watchdog.cancel()

    try:
        run_event_loop(run_until_signalled(main), settings.event_loop)
    except Exception as exc:
        # One line in the role's log (the traceback only with --debug, from the error handler): log
        # renderers that show locals would otherwise print settings, credentials in the URL included.
        log.error(f"{command} crashed", error=f"{type(exc).__name__}: {exc}")
        raise


async def _watch_parent(pid: int, stopping: Stopping) -> None:
    """Under ``bdurable dev``: drain and stop if the supervisor dies (we would be an orphan otherwise).

    The supervisor read this process's output through a pipe, which has no reader any more: output goes to
    ``/dev/null`` from then on, else the next log line (this one's first) fails with ``BrokenPipeError`` and
    the drain never starts.
    """
    while os.getppid() == pid:
        if await stopping.sleep(0.5):
            return
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    stopping.set()


def register(app: typer.Typer) -> None:
    """Add the role commands to the ``bdurable`` app."""
    app.command("dispatcher")(dispatcher)
    for command, summary in SETTINGS_ONLY_ROLES.items():
        app.command(command, help=summary)(_settings_only_role(command))
    app.command("console")(console)


# Roles configured by settings alone: one command each, built by the same factory.
SETTINGS_ONLY_ROLES = {
    "scheduler": "Fire due timers, delayed retries and wait timeouts; expire finished workflows.",
    "reaper": "Detect dead dispatchers by heartbeat and re-queue their in-flight work.",
    "signal-bus": "Route incoming events to waiting workflows and fan signals out to subscribers.",
}


def _settings_only_role(command: str) -> Callable[..., None]:
    """The command that runs one settings-only role (typer reads the parameters below)."""

    @handles_errors
    def run_role(
        redis_url: RedisUrl = None,
        prefix: Prefix = None,
        retention: Retention = None,
        heartbeat_interval: HeartbeatInterval = None,
        heartbeat_timeout: HeartbeatTimeout = None,
        wait_replicas: WaitReplicas = None,
        max_payload: MaxPayload = None,
        compress_above: CompressAbove = None,
        codec: Codec = None,
        log_format: LogFormat = None,
        log_level: LogLevel = None,
        metrics_port: MetricsPort = None,
        metrics_host: MetricsHost = None,
        event_loop: EventLoop = None,
        shards: Shards = None,
        drain_timeout: DrainTimeout = None,
        liveness_timeout: LivenessTimeout = None,
        debug: Debug = False,
    ) -> None:
        settings = _settings(
            redis_url, prefix, retention=retention, heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout, wait_replicas=wait_replicas, max_payload=max_payload,
            compress_above=compress_above, codec=codec, log_format=log_format, log_level=log_level,
            metrics_port=metrics_port, metrics_host=metrics_host, event_loop=event_loop, shards=shards,
            drain_timeout=drain_timeout, liveness_timeout=liveness_timeout,
        )  # fmt: skip
        role = _role_class(command)
        _serve(command, settings, lambda: role(settings))

    run_role.__name__ = command.replace("-", "_")
    return run_role


@handles_errors
def dispatcher(
    app: Annotated[list[str], typer.Option("--app", help="Module whose workflows and tasks to run (repeatable).")],
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Workflow steps and tasks run at once.")
    ] = 50,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", help="Only serve this queue (repeatable; default: all).")
    ] = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    retention: Retention = None,
    heartbeat_interval: HeartbeatInterval = None,
    heartbeat_timeout: HeartbeatTimeout = None,
    wait_replicas: WaitReplicas = None,
    max_payload: MaxPayload = None,
    compress_above: CompressAbove = None,
    codec: Codec = None,
    log_format: LogFormat = None,
    log_level: LogLevel = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = None,
    event_loop: EventLoop = None,
    shards: Shards = None,
    drain_timeout: DrainTimeout = None,
    liveness_timeout: LivenessTimeout = None,
    run_cache_bytes: RunCacheBytes = None,
    debug: Debug = False,
) -> None:
    """Run workflow steps and tasks of the --app modules."""
    from bdurable.registry import Registry

    settings = _settings(
        redis_url, prefix, retention=retention, heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout, wait_replicas=wait_replicas, max_payload=max_payload,
        compress_above=compress_above, codec=codec, log_format=log_format, log_level=log_level,
        metrics_port=metrics_port, metrics_host=metrics_host, event_loop=event_loop, shards=shards,
        drain_timeout=drain_timeout, liveness_timeout=liveness_timeout, run_cache_bytes=run_cache_bytes,
    )  # fmt: skip
    import_app_modules(app)
    registry = Registry.from_modules(app)
    role = _role_class("dispatcher")
    _serve(
        "dispatcher",
        settings,
        lambda: role(settings, registry, concurrency=concurrency, queues=queue or None),
    )


@handles_errors
def console(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; actions on a non-loopback one need the token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8080,
    read_only: Annotated[bool, typer.Option("--read-only", help="Refuse every action (cancel, resume, ...).")] = False,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    max_payload: MaxPayload = None,
    compress_above: CompressAbove = None,
    codec: Codec = None,
    log_format: LogFormat = None,
    log_level: LogLevel = None,
    shards: Shards = None,
    debug: Debug = False,
) -> None:
    """Serve the web console: workflows, their history and the fleet, and actions on them.

    BDURABLE_CONSOLE_TOKEN, when set, is required for every action (sign in on the pages, or send
    Authorization: Bearer TOKEN to the API); without it the console acts only when it listens on loopback.
    """
    settings = _settings(
        redis_url,
        prefix,
        max_payload=max_payload,
        compress_above=compress_above,
        codec=codec,
        log_format=log_format,
        log_level=log_level,
        shards=shards,
    )
    role = _role_class("console")
    _serve("console", settings, lambda: role(settings, host=host, port=port, read_only=read_only))
