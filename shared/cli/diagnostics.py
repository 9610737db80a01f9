"""``bdurable check`` (workflow code) and ``bdurable doctor`` (the Redis setup).

Both answer "will this hold up in production?" before it matters, and both exit non-zero on a finding,
so they can gate a CI pipeline or a deploy. The analyses live in ``bdurable.check`` and
``bdurable.doctor``; this module only runs and renders them.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bdurable.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Debug,
    JsonOutput,
    Prefix,
    RedisUrl,
    client_settings,
    console,
    echo_json,
    handles_errors,
    import_app_modules,
    redact_url,
    run,
)
from bdurable.doctor import DoctorReport

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``check`` and ``doctor`` to the ``bdurable`` app."""
    app.command("check")(check)
    app.command("doctor")(doctor)


@handles_errors
def check(
    app: Annotated[list[str], typer.Option("--app", help="Module whose workflows to check (repeatable).")],
    redis_url: Annotated[str | None, typer.Option("--redis-url", hidden=True)] = None,
    prefix: Annotated[str | None, typer.Option("--prefix", hidden=True)] = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Statically flag workflow code that would break replay: clock, randomness, sleeps, I/O, threads.

    Exit 1 when something is found, 0 when clean, 2 when a module cannot be imported.
    """
    from bdurable.check import check_module, workflows_in

    import_app_modules(app)
    names: list[str] = []
    findings = []
    for module_name in dict.fromkeys(app):
        module = sys.modules[module_name]
        names += [f"{wf.name}@{wf.version}" for wf in workflows_in(module)]
        findings += check_module(module)
    if json_output:
        echo_json({"workflows": names, "findings": [finding.to_json() for finding in findings]})
    else:
        for finding in findings:
            typer.echo(str(finding))
        count = len(findings)
        summary = f"checked {len(names)} workflow{'' if len(names) == 1 else 's'}: "
        summary += f"{count} finding{'' if count == 1 else 's'}" if count else "nothing that breaks replay"
        if not names:
            summary = f"no workflow found in {', '.join(app)}: nothing to check"
        typer.echo(summary, err=True)
    raise typer.Exit(EXIT_FAILED if findings else EXIT_OK)


@handles_errors
def doctor(
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Check the Redis setup (persistence, eviction, replicas, version) and print the loss window.

    Exit 0 when workflow state survives a restart and cannot be evicted, 1 otherwise, 4 if unreachable.
    """
    from bdurable.doctor import diagnose, with_payload_protection
    from bdurable.store import connect_redis

    settings = client_settings(redis_url, prefix)

    async def main() -> DoctorReport:
        redis = connect_redis(settings.redis_url)
        try:
            return await diagnose(redis, redis_url=redact_url(settings.redis_url), wait_replicas=settings.wait_replicas)
        finally:
            await redis.aclose()

    report = with_payload_protection(run(main()), settings)
    if json_output:
        echo_json(report.to_json())
    else:
        _print_report(report)
    raise typer.Exit(report.exit_code)


def _unknown(value: object) -> str:
    return "?" if value is None else str(value)


def _print_report(report: DoctorReport) -> None:
    out = console()
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    persistence = "AOF" if report.aof_enabled else ("no AOF" if report.aof_enabled is False else "AOF ?")
    snapshots = {None: "RDB ?", "": "no RDB snapshots"}.get(report.save, f"RDB (save {report.save})")
    rows = [
        ("redis", report.redis_url),
        (
            "server",
            f"Redis {_unknown(report.server_version)}, {_unknown(report.mode)}, {_unknown(report.role)}",
        ),
        ("persistence", f"{persistence}, {snapshots}"),
        ("appendfsync", _unknown(report.appendfsync)),
        ("eviction", _unknown(report.maxmemory_policy)),
        ("maxmemory", "none" if report.maxmemory == 0 else _unknown(report.maxmemory)),
        ("replicas", _unknown(report.connected_replicas)),
        ("loss window", report.loss_window),
        ("payloads", report.payloads),
        ("largest payload", f"{_unknown(report.largest_stored_payload)} bytes in Redis at BDURABLE_MAX_PAYLOAD"),
    ]
    for key, value in rows:
        table.add_row(key, escape(value))
    out.print(table)
    for problem in report.problems:
        out.print(f"[red]✗[/red] {escape(problem)}")
    for warning in report.warnings:
        out.print(f"[yellow]![/yellow] {escape(warning)}")
    for item in report.unchecked:
        out.print(f"[dim]? not checked: {escape(item)}[/dim]")
    if report.ok:
        out.print("[green]ok[/green]: workflow state survives a Redis restart and cannot be evicted")
    else:
        out.print("[red]not ok[/red]: workflow state could be lost or evicted with this setup")
