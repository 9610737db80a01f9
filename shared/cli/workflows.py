"""Commands about workflows' lives: ``start``, ``state``, ``result``, ``watch``, ``list``, ``history``.

Each is "build settings, open a client, call one client method, render": the engine's behaviour lives in
the client, so the CLI and Python users see the same semantics and the same errors.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from contextlib import suppress
from datetime import datetime
from typing import Annotated, Any

import typer

from bdurable.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    Debug,
    JsonOutput,
    Prefix,
    RedisUrl,
    client_settings,
    echo_json,
    error_console,
    fail,
    handles_errors,
    parse_json,
    parse_moment,
    parse_timeout,
    run,
    with_client,
)
from bdurable.cli.render import print_history, print_page, print_state
from bdurable.client import Client
from bdurable.durations import parse_duration
from bdurable.errors import (
    PayloadUnreadableError,
    ResultTimeoutError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from bdurable.model import Status, WorkflowState

__all__ = ["register"]

Timeout = Annotated[
    str | None,
    typer.Option("--timeout", help="Give up waiting after this long: seconds or a duration such as 2m (exit 124)."),
]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``bdurable`` app."""
    app.command("start")(start)
    app.command("state")(state)
    app.command("result")(result)
    app.command("watch")(watch)
    app.command("list")(list_workflows)
    app.command("history")(history)


async def _require_state(client: Client, workflow_id: str) -> WorkflowState:
    found = await client.get_state(workflow_id)
    if found is None:
        raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} (never started, or expired)")
    return found


def _progress_line(change: dict[str, Any]) -> str:
    text = f"{change.get('status')} · step {change.get('step')}"
    if change.get("waiting_on"):
        text += f" · waiting on {change['waiting_on']}"
    return text


async def _await_result(client: Client, workflow_id: str, limit: float | None, *, live: bool) -> Any:
    """The workflow's output; on a terminal (and only there) a live status line while it runs."""
    if not live:
        return await client.result(workflow_id, timeout=limit)
    with error_console().status(f"waiting for {workflow_id}") as status:

        async def follow() -> None:
            async for change in client.watch(workflow_id):
                if "status" in change:
                    status.update(f"{workflow_id}: {_progress_line(change)}")

        follower = asyncio.create_task(follow())
        try:
            return await client.result(workflow_id, timeout=limit)
        finally:
            follower.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await follower


async def _finish(client: Client, workflow_id: str, limit: float | None, *, json_output: bool) -> Any:
    """Wait for the result and print it; with ``--json`` a failure or a timeout still prints its document first
    (a timeout's without ``output``: the workflow goes on)."""
    live = sys.stderr.isatty() and not json_output
    try:
        output = await _await_result(client, workflow_id, limit, live=live)
    except PayloadUnreadableError as exc:
        return await _finish_unreadable(client, workflow_id, exc, json_output=json_output)
    except ResultTimeoutError as exc:
        if json_output:  # the id first, as without --wait: a script that let it be generated still learns it
            # The status the wait last read, as the error line says: no new read, which could outlast --timeout.
            echo_json({"workflow_id": workflow_id, "status": exc.last_status})
        raise
    except (WorkflowFailedError, WorkflowCancelledError) as exc:
        if json_output:
            final = await _require_state(client, workflow_id)
            echo_json(
                {
                    "workflow_id": workflow_id,
                    "status": final.status,
                    "output": final.output,
                    "error": final.error,
                }
            )
        if isinstance(exc, WorkflowCancelledError):
            reason = f": {exc.reason}" if exc.reason else ""
            raise CliError(f"workflow {workflow_id!r} was cancelled{reason}", EXIT_FAILED) from exc
        raise
    if json_output:
        echo_json({"workflow_id": workflow_id, "status": Status.COMPLETED.value, "output": output})
    else:
        echo_json(output)
    return output


async def _finish_unreadable(
    client: Client, workflow_id: str, problem: PayloadUnreadableError, *, json_output: bool
) -> Any:
    """The workflow finished but its outcome cannot be opened here (no key, or tampered with): print what the
    views show (``"<encrypted>"``), say why on stderr, and exit as its status says (0 completed, 1 otherwise)."""
    final = await _require_state(client, workflow_id)
    typer.echo(f"note: {problem}", err=True)
    if json_output:
        echo_json({"workflow_id": workflow_id, "status": final.status, "output": final.output, "error": final.error})
    elif final.status == Status.COMPLETED:
        echo_json(final.output)
    if final.status != Status.COMPLETED:
        raise CliError(f"workflow {workflow_id!r} ended {final.status}; its error is not readable here", EXIT_FAILED)
    return final.output


@handles_errors
def start(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Registered workflow name.")],
    input: Annotated[str | None, typer.Option("--input", help="Input as JSON, or @file (@- for stdin).")] = None,
    workflow_id: Annotated[
        str | None, typer.Option("--id", help="Workflow id (an idempotency key); random when omitted.")
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="Start this registered version (default: the newest live)."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the result and print it (exit 1 if it fails).")
    ] = False,
    timeout: Timeout = None,
    priority: Annotated[
        int, typer.Option("--priority", help="-1000 to 1000; higher runs first within its queue (default 0).")
    ] = 0,
    delay: Annotated[
        str | None, typer.Option("--delay", help='Start after this long (e.g. "10m"); SCHEDULED until then.')
    ] = None,
    start_at: Annotated[
        str | None, typer.Option("--start-at", help="Start at this time (ISO 8601 with offset); SCHEDULED until then.")
    ] = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Start a workflow by name and print its id (and its result with --wait)."""
    settings = client_settings(redis_url, prefix)
    value = parse_json(input, "--input")
    seconds = parse_timeout(timeout)
    if timeout is not None and not wait:
        fail("--timeout goes with --wait (how long to wait for the result)")
    at = parse_moment(start_at, "--start-at") if start_at is not None else None
    if delay is not None and at is not None:
        fail("give --delay or --start-at, not both")
    if delay is not None:
        try:
            parse_duration(delay)
        except ValueError as exc:
            fail(f"invalid --delay: {exc}")

    async def main() -> None:
        async with Client(settings=settings) as client:
            handle = await client.start(
                name, value, workflow_id=workflow_id, version=version, priority=priority, start_delay=delay,
                start_at=at,
            )  # fmt: skip
            if not wait:
                if json_output:
                    echo_json({"workflow_id": handle.workflow_id, "status": handle.status})
                else:
                    typer.echo(handle.workflow_id)
                return
            if not json_output:
                typer.echo(handle.workflow_id)
            await _finish(client, handle.workflow_id, seconds, json_output=json_output)

    run(main())


@handles_errors
def state(
    workflow_id: Annotated[str, typer.Argument(metavar="ID", help="Workflow id.")],
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Show a workflow's status, step, what it waits on, and its output or error."""
    found = with_client(redis_url, prefix, lambda client: _require_state(client, workflow_id))
    if json_output:
        echo_json(found.to_json())
    else:
        print_state(found)


@handles_errors
def result(
    workflow_id: Annotated[str, typer.Argument(metavar="ID", help="Workflow id.")],
    timeout: Timeout = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Wait for a workflow to finish and print its output; exit 1 if it failed or was cancelled."""
    seconds = parse_timeout(timeout)
    with_client(redis_url, prefix, lambda client: _finish(client, workflow_id, seconds, json_output=json_output))


@handles_errors
def watch(
    workflow_id: Annotated[str, typer.Argument(metavar="ID", help="Workflow id.")],
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per change, one per line (JSON Lines).")
    ] = False,
    debug: Debug = False,
) -> None:
    """Stream status changes and signals until the workflow finishes; exit as `result` would.

    With --json each change is one JSON object per line (JSON Lines).
    """
    settings = client_settings(redis_url, prefix)

    async def main() -> str:
        last = ""
        async with Client(settings=settings) as client:
            async for change in client.watch(workflow_id):
                if "status" in change:
                    last = str(change["status"])
                _print_change(change, json_output=json_output)
        return last

    final = run(main())
    raise typer.Exit(EXIT_OK if final == Status.COMPLETED else EXIT_FAILED)


def _print_change(change: dict[str, Any], *, json_output: bool) -> None:
    if json_output:
        typer.echo(_json_text(change))  # JSON Lines: one object per line, flushed at once
        return
    if "signal" in change:  # at the time it was sent (a finished workflow's signals are all from the past)
        signal = change["signal"] or {}
        at = signal.get("at")
        when = datetime.fromtimestamp(at / 1000) if isinstance(at, int | float) else datetime.now()
        typer.echo(f"{when:%H:%M:%S}  signal {signal.get('name')} {_json_text(signal.get('payload'))}")
    else:  # a status change, when it was seen
        typer.echo(f"{datetime.now():%H:%M:%S}  {_progress_line(change)}")


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


LIST_LIMIT = 100  # workflows per page of `bdurable list` by default


@handles_errors
def list_workflows(
    status: Annotated[str | None, typer.Option("--status", help="Only this status (RUNNING, FAILED, ...).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only workflows of this name.")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Only workflows of this version.")] = None,
    id_prefix: Annotated[
        str | None, typer.Option("--id-prefix", help="Only ids starting with this (the list is then by id).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many workflows.")] = LIST_LIMIT,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="Continue after a previous page (its next_cursor).")
    ] = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """List workflows, newest first (by id with --id-prefix)."""
    wanted = status.upper() if status else None
    page = with_client(
        redis_url,
        prefix,
        lambda client: client.list(
            status=wanted, name=name, limit=limit, cursor=cursor, version=version, prefix=id_prefix
        ),
    )
    if json_output:
        echo_json({"items": [item.to_json() for item in page.items], "next_cursor": page.next_cursor})
        return
    print_page(page.items)
    if page.next_cursor:  # the same query, from the next page on
        given = {"--status": status, "--name": name, "--version": version, "--id-prefix": id_prefix, "--prefix": prefix}
        options = [f"{option} {shlex.quote(value)}" for option, value in given.items() if value is not None]
        if limit != LIST_LIMIT:
            options.append(f"--limit {limit}")
        command = " ".join(["bdurable list", *options, f"--cursor {shlex.quote(page.next_cursor)}"])
        typer.echo(f"more: {command}", err=True)


@handles_errors
def history(
    workflow_id: Annotated[str, typer.Argument(metavar="ID", help="Workflow id.")],
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Show the recorded durable steps of a workflow (tasks, children, sleeps, events, signals)."""
    entries = with_client(redis_url, prefix, lambda client: client.history(workflow_id))
    if json_output:
        echo_json([entry.to_json() for entry in entries])
    else:
        print_history(entries)
