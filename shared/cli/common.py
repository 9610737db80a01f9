"""What every command shares: the common options, settings, JSON input, output, and error -> exit code.

The exit codes are part of the public contract (scripts branch on them), so they are decided in one place:
``exit_code_for`` maps each error to its code and ``run`` turns any error into one line on stderr plus that
code. A traceback is only shown with ``--debug``: an operator needs the message, not our stack.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import os
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from redis.exceptions import (
    ClusterDownError,
    InvalidResponse,
    RedisClusterException,
    RedisClusterUnreachableError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console

from bdurable import errors
from bdurable.client import Client
from bdurable.codec import read_json
from bdurable.config import DEFAULT_REDIS_URL, Settings, redact_url
from bdurable.durations import parse_duration

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNREACHABLE",
    "CliError",
    "Debug",
    "JsonOutput",
    "Prefix",
    "RedisUrl",
    "client_settings",
    "console",
    "echo_done",
    "echo_json",
    "error_console",
    "exit_code_for",
    "fail",
    "handles_errors",
    "import_app_modules",
    "parse_json",
    "parse_moment",
    "parse_timeout",
    "redact_url",
    "run",
    "with_client",
]

T = TypeVar("T")
P = ParamSpec("P")

EXIT_OK = 0
EXIT_FAILED = 1  # the workflow failed or was cancelled; also `check` findings and `doctor` problems
EXIT_BAD_INPUT = 2  # bad usage or input (typer's own usage errors exit 2 as well)
EXIT_NOT_FOUND = 3  # no such workflow or dead-letter entry
EXIT_UNREACHABLE = 4  # Redis cannot be reached
EXIT_TIMEOUT = 124  # `--timeout` ran out before the workflow finished (as GNU `timeout` does)
EXIT_INTERRUPTED = 130  # Ctrl-C while a client command waited (128 + SIGINT, as shells do)
EXIT_BROKEN_PIPE = 141  # stdout closed by its reader (128 + SIGPIPE, as shells report it)

RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        envvar="BDURABLE_REDIS_URL",
        show_envvar=True,
        help="Redis to use (default redis://localhost:6379/0; rediss:// for TLS).",
    ),
]
Prefix = Annotated[
    str | None,
    typer.Option("--prefix", envvar="BDURABLE_PREFIX", show_envvar=True, help="Key prefix (default bdurable)."),
]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON document.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")]


class CliError(Exception):
    """An error whose message is already fit for the user, with the exit code it implies."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Stop the command with one error line and ``code`` (used before any async work starts)."""
    raise CliError(message, code)


def console() -> Console:
    """A rich console on the current stdout (looked up per call: test runners swap ``sys.stdout``)."""
    # Tables keep their natural width, as kubectl's do: ids stay whole and copyable, rows stay one line for
    # grep/awk, and a narrow terminal wraps long lines itself instead of rich squeezing every column.
    return Console(file=sys.stdout, highlight=False, width=100_000)


def error_console() -> Console:
    """A rich console on stderr, for progress display and notes that must not pollute piped stdout."""
    return Console(file=sys.stderr, highlight=False)


def echo_json(value: Any) -> None:
    """Print one JSON document; anything the JSON codec cannot encode (datetimes) is written as text."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def echo_done(json_output: bool, text: str, document: dict[str, Any]) -> None:
    """An action's confirmation: a line for people, or with ``--json`` one document for scripts."""
    if json_output:
        echo_json(document)
    else:
        typer.echo(text)


def client_settings(redis_url: str | None, prefix: str | None, **overrides: Any) -> Settings:
    """Settings from the environment plus the command's options; a bad value is a usage error (exit 2)."""
    try:
        return Settings.from_env(redis_url=redis_url, prefix=prefix, **overrides)
    except ValueError as exc:
        raise CliError(f"invalid setting: {exc}") from None


def parse_json(text: str | None, option: str) -> Any:
    """Parse a JSON option value; ``@path`` reads a file and ``@-`` stdin. Errors name line and column."""
    if text is None:
        return None
    source = option
    if text.startswith("@"):
        path = text[1:]
        source = f"{option} {text}"
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CliError(f"cannot read {source}: {reason}") from None
    try:
        return read_json(text)
    except ValueError as exc:
        raise CliError(f"{source} {exc}") from None


def parse_moment(text: str, option: str) -> datetime:
    """An ISO 8601 time with its offset (``Z`` for UTC); a naive time is ambiguous, so it is refused."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{option} is not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise CliError(f"{option} needs a time zone offset (like 2026-12-07T08:00:00Z or +01:00): {text!r}")
    return moment


def parse_timeout(text: str | None) -> float | None:
    """``--timeout`` as seconds: a number (``30``) or a duration string (``"2m"``, ``"1h30m"``)."""
    if text is None:
        return None
    try:
        value = parse_duration(float(text) if _is_number(text) else text)
    except ValueError as exc:
        raise CliError(f"invalid --timeout: {exc}") from None
    if value <= 0:
        raise CliError("invalid --timeout: it must be greater than 0")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def import_app_modules(modules: list[str]) -> None:
    """Import the ``--app`` modules, with the current directory importable (as uvicorn and celery do).

    An import failure is the user's input being wrong, so it exits 2 naming the module and the cause.
    """
    import importlib

    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise CliError(f"cannot import --app module {module!r}: {type(exc).__name__}: {exc}") from exc


_BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    errors.ScheduleAlreadyExistsError,
    errors.UnknownWorkflowError,
    errors.InvalidInputError,
    errors.PayloadTooLargeError,
    errors.WorkflowAlreadyExistsError,
)


_NETWORK_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})


def exit_code_for(exc: BaseException) -> int:
    """The contract's exit code for an error raised by a command."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, errors.WorkflowFailedError | errors.WorkflowCancelledError):
        return EXIT_FAILED
    if isinstance(exc, errors.WorkflowNotFoundError | errors.DeadLetterNotFoundError | errors.ScheduleNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, _BAD_INPUT_ERRORS) or _wrong_url(exc):
        return EXIT_BAD_INPUT
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | RedisClusterUnreachableError | ConnectionError):
        return EXIT_UNREACHABLE
    if isinstance(exc, InvalidResponse):
        return EXIT_UNREACHABLE  # something answers there, but not Redis
    if isinstance(exc, SlotNotCoveredError | ClusterDownError | TryAgainError):
        return EXIT_UNREACHABLE  # a cluster with a primary down or slots no node serves (a failover): not serving
    if isinstance(exc, socket.gaierror):
        return EXIT_UNREACHABLE
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return EXIT_UNREACHABLE  # socket-level failures to connect: unreachable host or network
    if isinstance(exc, TimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, errors.DurableError | ValueError):
        return EXIT_BAD_INPUT  # e.g. resume of a workflow that is not halted, an invalid id or cursor
    return EXIT_FAILED


def _wrong_url(exc: BaseException) -> bool:
    """A Redis URL the server refuses: a database it does not have, a cluster URL for a single server. (A
    cluster's other complaints, slots not covered during a failover among them, are no fault of the URL.)"""
    if isinstance(exc, ResponseError):
        return str(exc).startswith("DB index is out of range")
    return isinstance(exc, RedisClusterException) and "Cluster mode is not enabled" in str(exc)


def message_for(exc: BaseException, redis_url: str | None, *, debug: bool = False) -> str:
    """One line saying what went wrong, without our internals."""
    code = exit_code_for(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, errors.ReplicationError):  # reached, and written: not an outage (exit 4 all the same)
        return f"{text} (the write was applied on the primary; running the command again is safe)"
    where = f" at {redact_url(redis_url)}" if redis_url else ""
    if isinstance(exc, InvalidResponse):
        return f"cannot reach Redis{where}: what answers there does not speak Redis's protocol ({text})"
    if code == EXIT_UNREACHABLE:
        return f"cannot reach Redis{where}: {text}"
    if _wrong_url(exc):
        url = f" {redact_url(redis_url)}" if redis_url else ""
        return f"the Redis URL{url} does not fit the server: {text}"
    if isinstance(exc, CliError | errors.DurableError | ValueError | TimeoutError):
        return text
    hint = "" if debug else " (run again with --debug for the traceback)"
    return f"{type(exc).__name__}: {text}{hint}"


def report_error(exc: BaseException, *, debug: bool, redis_url: str | None = None) -> NoReturn:
    """Write the error (one line, or the traceback with ``--debug``) and exit with its code."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    typer.echo(f"error: {message_for(exc, redis_url, debug=debug)}", err=True)
    raise typer.Exit(exit_code_for(exc))


def handles_errors(command: Callable[P, T]) -> Callable[P, T]:
    """Decorate a command: any error becomes one stderr line and the contract's exit code.

    The command's own ``debug`` and ``redis_url`` parameters (when it has them) decide whether a
    traceback is shown and which URL an "unreachable" message names. ``functools.wraps`` keeps the
    signature visible to typer, which builds the options from it.
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`bdurable list | head`): stop quietly, as Unix tools do.
            with suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            url = kwargs.get("redis_url") or os.environ.get("BDURABLE_REDIS_URL") or DEFAULT_REDIS_URL
            report_error(exc, debug=bool(kwargs.get("debug")), redis_url=str(url))

    return wrapper


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on a fresh event loop (commands are synchronous entry points)."""
    return asyncio.run(main)


def with_client(redis_url: str | None, prefix: str | None, operation: Callable[[Client], Awaitable[T]]) -> T:
    """Connect a client with the command's settings, await one operation on it, and return its result."""
    settings = client_settings(redis_url, prefix)

    async def main() -> T:
        async with Client(settings=settings) as client:
            return await operation(client)

    return run(main())
