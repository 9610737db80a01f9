"""``bdurable dev``: an embedded Redis, the four roles and the web console as child processes, one Ctrl-C stops
them all.

The roles run as separate processes (as in production) so that a developer sees the same behaviour,
logs and failure modes. The supervisor here is deliberately small, in the spirit of foreman/honcho:
- each child gets its own process group, so a terminal's Ctrl-C reaches only this supervisor, which
  then stops the children in order (SIGTERM, a grace period, SIGKILL for stragglers) and Redis last;
  a second Ctrl-C skips the grace period;
- each child also watches this process (``BDURABLE_DEV_PARENT``) and stops by itself if it dies, so a
  killed supervisor leaves no orphan behind;
- if a child dies unexpectedly, we say so and stop the others (exit 1): a half-running fleet would only
  confuse.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import sys
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from bdurable.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    CliError,
    Debug,
    Prefix,
    RedisUrl,
    client_settings,
    exit_code_for,
    fail,
    handles_errors,
    import_app_modules,
    parse_json,
    redact_url,
)
from bdurable.cli.roles import PARENT_ENV, ROLES, role_available

__all__ = ["DEFAULT_APP", "register"]

DEFAULT_APP = "bdurable.examples_app"  # run when no --app is given, if this build ships it
DEFAULT_PORT = 6379
DEFAULT_CONSOLE_PORT = 8080
GRACE_SECONDS = 15.0
LINE_LIMIT = 1024 * 1024
_COLOURS = {
    "dispatcher": "cyan",
    "scheduler": "magenta",
    "reaper": "yellow",
    "signal-bus": "green",
    "console": "blue",
    "redis": "red",
}


def register(app: typer.Typer) -> None:
    """Add ``dev`` to the ``bdurable`` app."""
    app.command("dev")(dev)


@dataclass
class Child:
    """One role process and the task copying its output to ours."""

    role: str
    process: asyncio.subprocess.Process
    pump: asyncio.Task[None] | None = field(default=None, repr=False)


def _say(label: str, text: str) -> None:
    """One output line, prefixed by who wrote it (colour only on a terminal: echo strips it otherwise)."""
    tag = typer.style(f"{label:<10} |", fg=_COLOURS.get(label, "white"))
    with suppress(BrokenPipeError, ValueError):
        typer.echo(f"{tag} {text}")


def _default_modules() -> list[str]:
    try:
        return [DEFAULT_APP] if importlib.util.find_spec(DEFAULT_APP) is not None else []
    except ImportError:
        return []


def _check_modules(modules: list[str]) -> None:
    """Fail early (exit 2) on a module that cannot be found, rather than through a dying child."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            fail(f"cannot find --app module {module!r} (is it importable from {cwd}?)")


def _check_start(modules: list[str], name: str, workflow_input: Any) -> None:
    """``--start NAME`` must be a workflow of the apps, and ``--input`` fit it: said at once (exit 2), before
    anything starts, rather than after waiting for a dispatcher to register a name it never will."""
    from bdurable.errors import InvalidInputError
    from bdurable.registry import Registry

    import_app_modules(modules)
    registry = Registry.from_modules(modules)
    definitions = [w for (workflow_name, _), w in registry.workflows.items() if workflow_name == name]
    if not definitions:
        defined = ", ".join(sorted({workflow_name for workflow_name, _ in registry.workflows})) or "none"
        fail(f"--start {name!r}: no workflow of that name in {', '.join(modules)} (workflows defined: {defined})")
    refusals: list[str] = []
    for definition in definitions:
        try:
            definition.validate_input(workflow_input)
            return
        except InvalidInputError as exc:
            refusals.append(str(exc))
    fail(f"--input: {refusals[0]}")


def _port_available(port: int) -> bool:
    """Whether a server could listen on the port now.

    SO_REUSEADDR, as redis-server itself uses: connections of a just-stopped Redis linger in TIME_WAIT
    for a minute, and must not make a restart of ``bdurable dev`` move to another port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pick_port(port: int | None, *, default: int = DEFAULT_PORT, option: str = "--port", what: str = "Redis") -> int:
    from bdurable.embedded import free_port

    if port is not None:
        if not _port_available(port):
            fail(f"port {port} is already in use: pick another {option}")
        return port
    if _port_available(default):
        return default
    chosen = free_port()
    _say("dev", f"port {default} is taken: {what} uses port {chosen}")
    return chosen


@handles_errors
def dev(
    app: Annotated[
        list[str] | None,
        typer.Option(
            "--app",
            help="Module whose workflows and tasks the dispatcher runs (repeatable); without it, every role but the "
            "dispatcher runs (start dispatchers yourself).",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Embedded Redis port (default 6379, else a free one)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Embedded Redis data directory (default: the user data dir)."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--start", help="Start this workflow once the roles run, watch it live, then stop everything."),
    ] = None,
    input_text: Annotated[str | None, typer.Option("--input", help="Input of --start: JSON, or @file.json.")] = None,
    console_port: Annotated[
        int | None,
        typer.Option("--console-port", min=1, max=65535, help="Web console port (default 8080, else a free one)."),
    ] = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    debug: Debug = False,
) -> None:
    """Run an embedded Redis, every role and the web console locally; Ctrl-C stops them all.

    Without --app no dispatcher runs: start dispatchers yourself against the URL dev prints.
    With --redis-url (or BDURABLE_REDIS_URL) no Redis is started and the roles use that one.
    If a role dies on its own, dev says so and stops the others (exit 1).
    With --start NAME, dev runs that one workflow end to end (its status changes and signals shown as they
    happen), prints its result and stops: exit 0 when it completed, 1 when it failed or was cancelled.
    """
    workflow_input = parse_json(input_text, "--input") if input_text is not None else None
    if input_text is not None and start is None:
        fail("--input goes with --start NAME")
    modules = list(app or _default_modules())
    if not modules and start is not None:
        fail("--start needs --app MODULE: the module whose workflow the dispatcher runs")
    _check_modules(modules)
    if start is not None:
        _check_start(modules, start, workflow_input)
    settings = client_settings(redis_url, prefix)
    embedded = redis_url is None
    if not embedded and (port is not None or data_dir is not None):
        _say("dev", "--port and --data-dir are ignored: using the Redis given by --redis-url")
    chosen_port = _pick_port(port) if embedded else None
    if data_dir is None:
        import platformdirs

        data_dir = Path(platformdirs.user_data_dir("bdurable")) / "dev-redis"
    job = None if start is None else (start, workflow_input)
    web_port = _pick_port(console_port, default=DEFAULT_CONSOLE_PORT, option="--console-port", what="the console")
    code = asyncio.run(
        _supervise(modules, settings.redis_url, settings.prefix, chosen_port, data_dir, job, console_port=web_port)
    )
    raise typer.Exit(code)


async def _supervise(
    modules: list[str],
    url: str,
    prefix: str,
    port: int | None,
    data_dir: Path,
    job: tuple[str, Any] | None = None,
    *,
    console_port: int = DEFAULT_CONSOLE_PORT,
) -> int:
    from bdurable.embedded import RedisServer

    loop = asyncio.get_running_loop()
    stop, force = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            force.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    server: RedisServer | None = None
    children: list[Child] = []
    code = EXIT_OK
    try:
        if port is not None:
            server = RedisServer(port=port, data_dir=str(data_dir), appendonly=True)
            try:
                # Launched from this (the main) thread, so the server dies with this process even when it is
                # SIGKILLed (bdurable.embedded._die_with_parent); waited for in another, so the loop keeps turning.
                await asyncio.to_thread(server.launch().wait_ready)
            except (OSError, RuntimeError, TimeoutError) as exc:
                server = None
                raise CliError(f"could not start the embedded Redis: {exc}", EXIT_UNREACHABLE) from None
            url = server.url
            _say("redis", f"Redis {url} (AOF on, data in {data_dir})")
            _say("dev", "from another terminal:")
            _say("dev", f"  export BDURABLE_REDIS_URL={url}")
        else:
            _say("redis", f"using Redis at {redact_url(url)}")
        if prefix != "bdurable":
            _say("dev", f"  export BDURABLE_PREFIX={prefix}")
        if not stop.is_set():
            await _start_children(children, modules, url, prefix, console_port)
            if any(child.role == "console" for child in children):
                _say("dev", f"web console: http://127.0.0.1:{console_port}/")
            runner = None if job is None else asyncio.create_task(_run_job(url, prefix, *job, stop))
            code = await _wait_for_stop_or_death(children, stop)
            if runner is not None:
                if not runner.done():
                    runner.cancel()
                with suppress(asyncio.CancelledError):
                    job_code = await runner
                    code = code if code != EXIT_OK else job_code
        _say("dev", "stopping (Ctrl-C again to kill at once)")
        await _stop_children(children, force)
    finally:
        await _kill_all(children)
        if server is not None:
            await asyncio.to_thread(server.stop)
            _say("redis", "stopped")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    _say("dev", "stopped")
    return code


async def _run_job(url: str, prefix: str, name: str, workflow_input: Any, stop: asyncio.Event) -> int:
    """Start one workflow, show its progress and result, then ask dev to stop; returns the exit code."""
    from bdurable import Client, Settings
    from bdurable.errors import DurableError

    settings = Settings.from_env(redis_url=url, prefix=prefix)
    code = EXIT_FAILED
    try:
        async with Client(settings=settings) as client:
            handle = await _start_when_registered(client, name, workflow_input)
            _say("watch", f"started {name} as {handle.workflow_id}")
            async for change in client.watch(handle.workflow_id):
                if "signal" in change:
                    signal_record = change["signal"]
                    _say("watch", f"signal {signal_record.get('name')}: {signal_record.get('payload')}")
                else:
                    waiting = f" (waiting on {change['waiting_on']})" if change.get("waiting_on") else ""
                    _say("watch", f"{change['status']} step {change['step']}{waiting}")
            try:
                output = await client.result(handle.workflow_id)
                _say("result", json.dumps(output, ensure_ascii=False))
                code = EXIT_OK
            except DurableError as exc:
                _say("result", f"{type(exc).__name__}: {exc}")
    except (DurableError, OSError, ValueError) as exc:  # not started: Redis, or a start refused (exit 2)
        _say("dev", f"could not run {name}: {exc}")
        code = exit_code_for(exc)
    finally:
        stop.set()
    return code


async def _start_when_registered(client: Any, name: str, workflow_input: Any) -> Any:
    """Start by name as soon as the dispatcher has registered the workflow (it starts in parallel)."""
    from bdurable.errors import UnknownWorkflowError

    deadline = asyncio.get_running_loop().time() + 60
    while True:
        try:
            return await client.start(name, workflow_input)
        except UnknownWorkflowError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _start_children(
    children: list[Child], modules: list[str], url: str, prefix: str, console_port: int = DEFAULT_CONSOLE_PORT
) -> None:
    """Start each available role (appending as we go, so a failure half-way still stops the rest)."""
    env = dict(os.environ)
    env.update(
        BDURABLE_REDIS_URL=url,
        BDURABLE_PREFIX=prefix,
        BDURABLE_LOG_FORMAT="console",
        PYTHONUNBUFFERED="1",
        **{PARENT_ENV: str(os.getpid())},
    )
    for role in ROLES:
        if not role_available(role):
            _say("dev", f"the {role} role is not available in this build: not started")
            continue
        if role == "dispatcher" and not modules:  # nothing for it to run: dispatchers are started by hand
            _say("dev", "no --app: no dispatcher runs; start one with `bdurable dispatcher --app MODULE` (same URL)")
            continue
        args = [arg for module in modules for arg in ("--app", module)] if role == "dispatcher" else []
        if role == "console":
            args = ["--host", "127.0.0.1", "--port", str(console_port)]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bdurable.cli", role, *args,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, limit=LINE_LIMIT,
        )  # fmt: skip
        child = Child(role, process)
        child.pump = asyncio.create_task(_pump(child))
        children.append(child)


async def _pump(child: Child) -> None:
    """Copy a child's output line by line, each line prefixed with the role's name."""
    stream = child.process.stdout
    assert stream is not None
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line longer than LINE_LIMIT: pass it on in pieces
            line = await stream.read(LINE_LIMIT)
        if not line:
            return
        _say(child.role, line.decode(errors="replace").rstrip("\n"))


async def _wait_for_stop_or_death(children: list[Child], stop: asyncio.Event) -> int:
    """Wait for a stop signal (exit 0) or for a child to exit on its own (exit 1)."""
    stopped = asyncio.create_task(stop.wait())
    exits = {asyncio.create_task(child.process.wait()): child for child in children}
    try:
        done, _ = await asyncio.wait([stopped, *exits], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        for task in exits:
            task.cancel()
    if stop.is_set():
        return EXIT_OK
    for task in done:
        if task in exits:
            child = exits[task]
            if child.pump is not None:
                with suppress(asyncio.CancelledError):
                    await child.pump  # its last words first
            _say(
                "dev",
                f"{child.role} exited unexpectedly (code {child.process.returncode}): stopping the others",
            )
    return EXIT_FAILED


def _signal(child: Child, sig: signal.Signals) -> None:
    if child.process.returncode is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, sig)


async def _stop_children(children: list[Child], force: asyncio.Event) -> None:
    """SIGTERM every child, wait for them to drain (up to the grace period, or a second Ctrl-C)."""
    for child in children:
        _signal(child, signal.SIGTERM)
    waiting: set[asyncio.Future[Any]] = {
        asyncio.ensure_future(_all_exited(children)),
        asyncio.ensure_future(force.wait()),
    }
    try:
        await asyncio.wait(waiting, timeout=GRACE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in waiting:
            future.cancel()
    for child in children:
        if child.process.returncode is None:
            _say("dev", f"{child.role} did not stop in time: killing it")
    await _kill_all(children)


async def _all_exited(children: list[Child]) -> None:
    for child in children:
        await child.process.wait()


async def _kill_all(children: list[Child]) -> None:
    """SIGKILL whatever is still running and reap it; finish copying every child's output."""
    for child in children:
        _signal(child, signal.SIGKILL)
    for child in children:
        await child.process.wait()
        if child.pump is not None:
            with suppress(asyncio.CancelledError, Exception):
                await child.pump
