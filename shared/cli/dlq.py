"""``bdurable dlq``: inspect and resolve the dead-letter queue.

``retry`` and ``fail`` only act on an entry whose workflow is parked on it (a task declared with
``on_exhausted="park"``); the client refuses others with a message that says why (exit 2), and an
unknown entry exits 3. ``purge`` is destructive, so on a terminal it asks first.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bdurable.cli.common import (
    Debug,
    JsonOutput,
    Prefix,
    RedisUrl,
    client_settings,
    echo_done,
    echo_json,
    handles_errors,
    run,
    with_client,
)
from bdurable.cli.render import print_dead_letter, print_dead_letters
from bdurable.client import Client
from bdurable.model import DeadLetter

__all__ = ["dlq_app"]

dlq_app = typer.Typer(
    name="dlq",
    help="Dead-letter queue: task calls that exhausted their attempts.",
    no_args_is_help=True,
    add_completion=False,
)

EntryId = Annotated[str, typer.Argument(metavar="ENTRY", help="Dead-letter entry id (see `bdurable dlq list`).")]


@dlq_app.command("list")
@handles_errors
def list_entries(
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """List dead-letter entries, oldest first."""
    settings = client_settings(redis_url, prefix)

    async def main() -> list[DeadLetter]:
        async with Client(settings=settings) as client:
            return await client.dlq_list()

    entries = [entry.to_json() for entry in run(main())]
    if json_output:
        echo_json(entries)
    else:
        print_dead_letters(entries)


@dlq_app.command("show")
@handles_errors
def show(
    entry_id: EntryId,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Show one entry: the task, its arguments, the error and its traceback."""
    entry = with_client(redis_url, prefix, lambda client: client.dlq_show(entry_id)).to_json()
    if json_output:
        echo_json(entry)
    else:
        print_dead_letter(entry)


@dlq_app.command("retry")
@handles_errors
def retry(
    entry_id: EntryId,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Run a parked task again; its workflow goes on with the result."""
    with_client(redis_url, prefix, lambda client: client.dlq_retry(entry_id))
    echo_done(json_output, f"entry {entry_id} re-queued: its task runs again", {"entry_id": entry_id, "retried": True})


@dlq_app.command("fail")
@handles_errors
def fail_entry(
    entry_id: EntryId,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Give up on a parked task; its workflow receives TaskFailedError."""
    with_client(redis_url, prefix, lambda client: client.dlq_fail(entry_id))
    text = f"entry {entry_id} failed: its workflow receives TaskFailedError"
    echo_done(json_output, text, {"entry_id": entry_id, "failed": True})


@dlq_app.command("purge")
@handles_errors
def purge(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Delete every entry no workflow is parked on (asks first on a terminal)."""
    settings = client_settings(redis_url, prefix)
    if not yes and sys.stdin.isatty() and not typer.confirm("Delete every dead-letter entry not parked on?"):
        typer.echo("nothing deleted", err=True)
        raise typer.Exit(1)

    async def main() -> int:
        async with Client(settings=settings) as client:
            return await client.dlq_purge()

    removed = run(main())
    echo_done(json_output, f"purged {removed} entr{'y' if removed == 1 else 'ies'}", {"purged": removed})
