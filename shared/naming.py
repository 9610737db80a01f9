"""The names of tasks and workflows as their decorators take them: the one check both apply."""

from __future__ import annotations

__all__ = ["check_queue", "given_name"]


def given_name(name: object, default: str, what: str) -> str:
    """The ``name=`` of a ``@task`` or ``@workflow`` (``what`` names it in errors), or ``default`` without one.

    An empty name is refused rather than replaced by the default: a name is recorded in every history, so a
    silent fallback would record another name than the one written.
    """
    if name is None:
        return default
    if not isinstance(name, str):
        raise TypeError(f"{what}: name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{what}: name is empty: give a name, or leave it out for the default {default}")
    return name


def check_queue(queue: object, what: str) -> str:
    """A queue's name (``@task(queue=...)``, ``@workflow(queue=...)``, ``--queue``), or ``ValueError``.

    Not empty (a ready queue's key ends with it: an empty one would be no queue a dispatcher can wait on), and
    none of the characters that separate the fields of the engine's own records.
    """
    if not isinstance(queue, str):
        raise TypeError(f"{what}: queue must be a str, not {type(queue).__name__}")
    if not queue:
        raise ValueError(f"{what}: the queue name is empty")
    if any(c in queue for c in "\t\n|@{}"):
        raise ValueError(f"{what}: queue {queue!r} may not contain tabs, newlines, |, @, {{ or }}")
    return queue
