"""The one place that decides whether a failed task attempt is retried, and after how long.

Both the dispatcher (an attempt that raised or timed out) and the reaper (an attempt that died with its
dispatcher) ask :class:`RetryPolicy`; the Lua scripts only apply the decision (see ``task_attempt_failed`` in
``lib.lua``). Exponential backoff from the task's ``backoff``, doubled per attempt, capped at five minutes,
plus up to 10% jitter so that calls that failed together do not retry together.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_BACKOFF_MS", "RetryPolicy"]

MAX_BACKOFF_MS = 300_000
JITTER = 0.1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A task's retry settings: how many attempts in all, and the first backoff."""

    max_attempts: int
    backoff_ms: int
    cap_ms: int = MAX_BACKOFF_MS
    jitter: float = JITTER

    def delay_after(
        self, attempts: int, *, retryable: bool = True, rng: Callable[[], float] = random.random
    ) -> int | None:
        """The delay (ms) before the next attempt, after ``attempts`` attempts ended in failure; ``None`` when no
        attempt is left (or the failure is not retryable): the call is given up."""
        if not retryable or attempts >= self.max_attempts:
            return None
        base = min(self.backoff_ms << max(0, attempts - 1), self.cap_ms)
        return round(base + rng() * base * self.jitter)
