"""``bdurable export`` (a workflow's history as a file) and ``bdurable replay`` (today's code against such files).

Together they gate a deploy: export a sample of production histories, keep them as fixtures, and let CI run
``bdurable replay --app MODULE histories/`` before every deploy. ``replay`` never touches Redis.
Exit codes of ``replay``: 0 every history replays identically; 1 at least one diverges (one line each on
stdout); 2 a history cannot be read or replayed at all (one ``error:`` line each on stderr), or bad usage.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from bdurable.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    Debug,
    JsonOutput,
    Prefix,
    RedisUrl,
    echo_json,
    handles_errors,
    import_app_modules,
    run,
    with_client,
)
from bdurable.history import History, export
from bdurable.payloads import ENCRYPTED

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``replay`` to the ``bdurable`` app."""
    app.command("export")(export_history)
    app.command("replay")(replay)


@handles_errors
def export_history(
    workflow_id: Annotated[str, typer.Argument(metavar="ID", help="Workflow id.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write the history to FILE instead of stdout."),
    ] = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,  # what it writes is JSON already: taken, like every command's, and changes nothing
    debug: Debug = False,
) -> None:
    """Write a workflow's history as one self-contained JSON document, for `bdurable replay`.

    Name, version, input, outcome, every durable call with its arguments and result, and the results in order.
    """
    history: History = with_client(redis_url, prefix, lambda client: export(client, workflow_id))
    text = history.to_text()
    if f'"{ENCRYPTED}"' in text:
        typer.echo(
            f"warning: some payloads of {workflow_id} are encrypted with keys this process lacks: they show as "
            f"{ENCRYPTED} and the history cannot be replayed (set BDURABLE_ENCRYPTION_KEYS)",
            err=True,
        )
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    typer.echo(f"exported {len(history.calls)} calls of {workflow_id} ({history.status}) to {output}", err=True)


@handles_errors
def replay(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILES...", help="History files (from `bdurable export`), or folders of *.json."),
    ],
    app: Annotated[list[str], typer.Option("--app", help="Module defining the workflows (repeatable).")],
    json_output: JsonOutput = False,
    redis_url: Annotated[str | None, typer.Option("--redis-url", hidden=True)] = None,  # accepted, never used
    prefix: Annotated[str | None, typer.Option("--prefix", hidden=True)] = None,
    debug: Debug = False,
) -> None:
    """Check today's code against exported histories, offline (no Redis): exit 1 names each first divergence.

    Exit 0 when every history replays identically, 1 when one diverges, 2 when one cannot be read or replayed.
    """
    from bdurable.testing import Replayer

    import_app_modules(app)
    try:
        replayer = Replayer(apps=app, max_payload=os.environ.get("BDURABLE_MAX_PAYLOAD") or None)
    except ValueError as exc:
        raise CliError(f"cannot load the --app modules: {exc}") from None
    results = run(replayer.replay_all(_history_files(files)))
    diverged = [r for r in results if r.divergence is not None]
    unreadable = [r for r in results if r.problem is not None]
    if json_output:
        echo_json({"results": [r.to_json() for r in results]})
    else:
        for result in diverged:
            typer.echo(result.message)
        for result in unreadable:
            typer.echo(f"error: {result.message}", err=True)
        identical = len(results) - len(diverged) - len(unreadable)
        summary = f"replayed {len(results)} histor{'y' if len(results) == 1 else 'ies'}: {identical} identical"
        summary += f", {len(diverged)} diverged" if diverged else ""
        summary += f", {len(unreadable)} unreadable" if unreadable else ""
        typer.echo(summary, err=True)
    raise typer.Exit(EXIT_BAD_INPUT if unreadable else EXIT_FAILED if diverged else EXIT_OK)


def _history_files(paths: list[Path]) -> list[Path]:
    """The files to replay: each path given, a folder standing for the ``*.json`` files in it (sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise CliError(f"{path}: a folder without any *.json history")
            files += found
        else:
            files.append(path)
    return files
