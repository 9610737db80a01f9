"""``bdurable schedule``: create, inspect, pause, trigger, backfill and delete schedules (INTERFACE §8).

Each command is one client call; an unknown schedule exits 3, a bad option (cron, time zone, overlap, JSON)
exits 2, like every other command.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bdurable.cli.common import (
    Debug,
    JsonOutput,
    Prefix,
    RedisUrl,
    echo_done,
    echo_json,
    handles_errors,
    parse_json,
    parse_moment,
    with_client,
)
from bdurable.cli.render import print_schedule, print_schedules
from bdurable.client import Client
from bdurable.model import ScheduleInfo

__all__ = ["schedule_app"]

schedule_app = typer.Typer(
    name="schedule",
    help="Schedules: start a workflow at cron times or fixed intervals.",
    no_args_is_help=True,
    add_completion=False,
)

ScheduleId = Annotated[str, typer.Argument(metavar="ID", help="Schedule id.")]


def _show(info: ScheduleInfo, json_output: bool) -> None:
    if json_output:
        echo_json(info.to_json())
    else:
        print_schedule(info)


@schedule_app.command("create")
@handles_errors
def create(
    schedule_id: ScheduleId,
    workflow: Annotated[str, typer.Argument(metavar="WORKFLOW", help="Registered workflow name.")],
    cron: Annotated[
        str | None, typer.Option("--cron", help='Cron expression, 5 fields (e.g. "0 9 * * MON-FRI").')
    ] = None,
    every: Annotated[str | None, typer.Option("--every", help='Fixed interval (e.g. "15m").')] = None,
    input: Annotated[str | None, typer.Option("--input", help="Input as JSON, or @file (@- for stdin).")] = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="IANA time zone of the cron times (default UTC).")
    ] = None,
    overlap: Annotated[
        str,
        typer.Option(
            "--overlap", help="While the previous run runs: skip, buffer_one, buffer_all, cancel_other, allow_all."
        ),
    ] = "skip",
    jitter: Annotated[str | None, typer.Option("--jitter", help="Delay each run by up to this.")] = None,
    catchup_window: Annotated[
        str, typer.Option("--catchup-window", help="Run missed times this recent after an outage.")
    ] = "1m",
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    version: Annotated[str | None, typer.Option("--version", help="Start this registered version.")] = None,
    start_at: Annotated[str | None, typer.Option("--start-at", help="First possible time (ISO 8601).")] = None,
    end_at: Annotated[str | None, typer.Option("--end-at", help="No run at or after this time (ISO 8601).")] = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Create a schedule (exactly one of --cron and --every)."""
    value = parse_json(input, "--input")
    options: dict[str, Any] = {
        "cron": cron, "every": every, "timezone": timezone, "overlap": overlap, "jitter": jitter,
        "catchup_window": catchup_window, "paused": paused, "version": version,
        "start_at": parse_moment(start_at, "--start-at") if start_at else None,
        "end_at": parse_moment(end_at, "--end-at") if end_at else None,
    }  # fmt: skip

    async def create_noting_the_unregistered(client: Client) -> tuple[ScheduleInfo, bool]:
        info = await client.create_schedule(schedule_id, workflow, value, **options)
        return info, await client.reads.registration(workflow, version, workflow) is not None

    info, registered = with_client(redis_url, prefix, create_noting_the_unregistered)
    if not registered:  # allowed (dispatchers may be deployed later), but a typo would look the same
        which = f"workflow {workflow!r}" + (f" version {version!r}" if version else "")
        typer.echo(f"note: no dispatcher has registered {which} yet: the schedule fires once one does", err=True)
    _show(info, json_output)


@schedule_app.command("list")
@handles_errors
def list_all(
    redis_url: RedisUrl = None, prefix: Prefix = None, json_output: JsonOutput = False, debug: Debug = False
) -> None:
    """List every schedule with its next run."""
    found = with_client(redis_url, prefix, lambda client: client.list_schedules())
    if json_output:
        echo_json([info.to_json() for info in found])
    else:
        print_schedules(found)


@schedule_app.command("show")
@handles_errors
def show(
    schedule_id: ScheduleId,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Show a schedule: its options, next runs, recent firings and missed times."""
    _show(with_client(redis_url, prefix, lambda client: client.get_schedule(schedule_id)), json_output)


@schedule_app.command("pause")
@handles_errors
def pause(
    schedule_id: ScheduleId,
    note: Annotated[str | None, typer.Option("--note", help="Why it is paused (shown with the schedule).")] = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Stop firing until unpaused (times passing meanwhile do not run later)."""
    paused = with_client(redis_url, prefix, lambda c: c.update_schedule(schedule_id, paused=True, note=note))
    _show(paused, json_output)


@schedule_app.command("unpause")
@handles_errors
def unpause(
    schedule_id: ScheduleId,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Fire again, from the next time after now."""
    _show(with_client(redis_url, prefix, lambda c: c.update_schedule(schedule_id, paused=False)), json_output)


@schedule_app.command("trigger")
@handles_errors
def trigger(
    schedule_id: ScheduleId,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Run the schedule once now (obeying its overlap policy); prints the run's workflow id."""
    workflow_id = with_client(redis_url, prefix, lambda client: client.trigger_schedule(schedule_id))
    echo_done(json_output, workflow_id, {"schedule_id": schedule_id, "workflow_id": workflow_id})


@schedule_app.command("backfill")
@handles_errors
def backfill(
    schedule_id: ScheduleId,
    start: Annotated[str, typer.Option("--start", help="From this time (ISO 8601, included).")],
    end: Annotated[str, typer.Option("--end", help="To this time (ISO 8601, excluded).")],
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Run every past scheduled time in [--start, --end) once (at most 10,000); prints the runs' workflow ids."""
    first, last = parse_moment(start, "--start"), parse_moment(end, "--end")
    started = with_client(redis_url, prefix, lambda client: client.backfill_schedule(schedule_id, first, last))
    if json_output:
        echo_json({"schedule_id": schedule_id, "workflow_ids": started})
    else:
        for workflow_id in started:
            typer.echo(workflow_id)


@schedule_app.command("delete")
@handles_errors
def delete(
    schedule_id: ScheduleId,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Delete a schedule (the workflows it started are not touched)."""
    with_client(redis_url, prefix, lambda client: client.delete_schedule(schedule_id))
    echo_done(json_output, f"deleted schedule {schedule_id}", {"schedule_id": schedule_id, "deleted": True})
