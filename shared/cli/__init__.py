"""The ``bdurable`` command line: role processes, workflow operations, checks and a local dev setup.

Commands live in small modules by concern (``roles``, ``workflows``, ``manage``, ``dlq``, ``dev``,
``diagnostics``, ``schedules``, ``replay``); this module only assembles them. Exit codes and ``--json`` shapes are
the public contract (see ``bdurable.cli.common``).
"""

from __future__ import annotations

import os
import sys

import typer

from bdurable.cli import dev, diagnostics, manage, replay, roles, workflows
from bdurable.cli.dlq import dlq_app
from bdurable.cli.schedules import schedule_app

__all__ = ["app", "main"]

# click's exception classes, from wherever this typer takes click (newer typers carry their own copy of it).
UsageError: type[Exception] = typer.BadParameter.__mro__[1]
ClickException: type[Exception] = typer.BadParameter.__mro__[2]

app = typer.Typer(
    name="bdurable",
    help="Durable workflows on Redis. Exit codes: 0 ok, 1 workflow failed or cancelled (or findings), "
    "2 bad usage or input, 3 not found, 4 Redis unreachable, 124 --timeout ran out, 130 interrupted (Ctrl-C).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
roles.register(app)
dev.register(app)
workflows.register(app)
manage.register(app)
app.add_typer(dlq_app, name="dlq")
app.add_typer(schedule_app, name="schedule")
diagnostics.register(app)
replay.register(app)


def _quiet_library_logs() -> None:
    """The library's own log lines (a client riding out a Redis outage says so at debug level) go to stderr, at
    warning and above unless ``BDURABLE_LOG_LEVEL`` says otherwise: stdout holds only what a command prints
    (its ``--json`` document above all). A role command configures logging again from its settings."""
    from bdurable.runtime.logging import configure_logging

    try:
        level, fmt = os.environ.get("BDURABLE_LOG_LEVEL") or "warning", os.environ.get("BDURABLE_LOG_FORMAT") or None
        configure_logging(level=level, fmt=fmt, stream=sys.stderr)
    except ValueError:  # a bad level: the command that reads the settings says so
        configure_logging(level="warning", stream=sys.stderr)


def main() -> None:
    """Console-script entry point (``bdurable``).

    Run outside click's standalone mode so that a usage error (a missing argument, an unknown option, a value out
    of range) is one stderr line like every other error (INTERFACE §6), not click's usage block; exit code 2.
    """
    _quiet_library_logs()
    try:
        code = app(prog_name="bdurable", standalone_mode=False)
    except UsageError as exc:
        context = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and context is not None:  # bare `bdurable`, `bdurable dlq`
            exc.show()  # type: ignore[attr-defined]
        else:
            hint = f" (see '{context.command_path} -h')" if context is not None else ""
            typer.echo(f"error: {exc.format_message()}{hint}", err=True)  # type: ignore[attr-defined]
        sys.exit(getattr(exc, "exit_code", 2))
    except ClickException as exc:
        typer.echo(f"error: {exc.format_message()}", err=True)  # type: ignore[attr-defined]
        sys.exit(getattr(exc, "exit_code", 1))
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
