"""Control flow a workflow's code raises to end its run in a way other than returning or failing."""

from __future__ import annotations

__all__ = ["ContinueAsNew"]


class ContinueAsNew(BaseException):
    """Raised by ``ctx.continue_as_new``: ends this run; the next starts with ``input`` (a payload).

    A ``BaseException``, like ``asyncio.CancelledError``, so that a workflow's ``except Exception`` cannot
    swallow it; ``finally`` blocks still run.
    """

    def __init__(self, input: str) -> None:
        super().__init__("continue as new")
        self.input = input
