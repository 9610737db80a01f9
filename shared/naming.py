"""The names of tasks and workflows as their decorators take them: the one check both apply."""

from __future__ import annotations

__all__ = ["given_name"]


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
