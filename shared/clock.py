"""Where the engine's Python code reads the time of workflows (``ctx.now()``, delayed starts, schedules).

Production reads the wall clock here and the Redis server's clock (``TIME``) in the scripts, with no offset
anywhere: :data:`SYSTEM_CLOCK`. Only :mod:`bdurable.testing` makes another clock (a time-skipping test
environment moves it on by an offset it alone controls), and only by passing it to the objects it creates
in its own process: no setting or environment variable selects it, so production cannot run on it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["SYSTEM_CLOCK", "Clock"]


class Clock:
    """The wall clock, plus ``offset_ms`` (always 0 but in a test environment)."""

    test = False  # True: the scripts add the test offset stored in Redis (bdurable.lua, test_clock=True)

    def __init__(self) -> None:
        self.offset_ms = 0

    def now(self) -> datetime:
        """The current time of workflows (aware, UTC)."""
        return datetime.now(UTC) + timedelta(milliseconds=self.offset_ms)


SYSTEM_CLOCK = Clock()
