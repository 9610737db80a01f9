"""The ``bdurable`` command line: role processes, workflow operations, checks and a local dev setup.

Commands live in small modules by concern (``roles``, ``workflows``, ``manage``, ``dlq``, ``dev``,
``diagnostics``, ``schedules``, ``replay``); this module only assembles them. Exit codes and ``--json`` shapes are
the public contract (see ``bdurable.cli.common``).
"""

from __future__ import annotations

import typer

from bdurable.cli import dev, diagnostics, manage, replay, roles, workflows
from bdurable.cli.dlq import dlq_app
from bdurable.cli.schedules import schedule_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="bdurable",
    help="Durable workflows on Redis. Exit codes: 0 ok, 1 workflow failed or cancelled (or findings), "
    "2 bad usage or input, 3 not found, 4 Redis unreachable, 124 --timeout ran out.",
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


def main() -> None:
    """Console-script entry point (``bdurable``)."""
    app(prog_name="bdurable")
