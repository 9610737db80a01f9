"""Flow control settings: how many calls of a task (or runs of a workflow) may be in progress at once, and how
many attempts may start per window, fleet-wide, optionally per key.

A limit is enforced in Redis by the claim scripts (see docs/architecture.md, "Flow control"): a call held back
by its limit waits (never fails) and keeps its place in line. This module only parses and validates the
settings and computes a call's limit id (the task or workflow name and the call's key).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Limit", "RateLimit", "limit_id", "parse_rate"]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour)s?\s*$")
_PERIOD_MS = {"s": 1000, "sec": 1000, "second": 1000, "m": 60_000, "min": 60_000, "minute": 60_000,
              "h": 3_600_000, "hour": 3_600_000}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` attempts start in any window of ``period_ms`` (a sliding window: no burst beyond)."""

    count: int
    period_ms: int

    def __str__(self) -> str:
        return f"{self.count}/{self.period_ms / 1000:g}s"


def parse_rate(text: str) -> RateLimit:
    """``"100/m"``, ``"20/s"``, ``"1000/h"`` (also ``"5/10s"``: five per ten seconds)."""
    value: object = text  # callers without a type checker may pass anything
    match = _RATE.match(text) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"invalid rate limit {text!r}: write N/s, N/m or N/h (e.g. '100/m')")
    count, multiple, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3)
    if count < 1 or multiple < 1:
        raise ValueError(f"invalid rate limit {text!r}: the count and the period must be positive")
    return RateLimit(count, multiple * _PERIOD_MS[unit])


@dataclass(frozen=True, slots=True)
class Limit:
    """The flow control of one task or workflow: any of concurrency and rate, optionally per key."""

    concurrency: int | None = None
    rate: RateLimit | None = None
    key: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        concurrency: object = self.concurrency  # callers without a type checker may pass anything
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):  # a bool is an int to Python, and `concurrency=True` is never meant as one
            raise ValueError(f"concurrency must be a positive integer, not {concurrency!r}")
        if self.key is not None and not callable(self.key):
            raise ValueError("key must be a function returning a string")

    @property
    def active(self) -> bool:
        return self.concurrency is not None or self.rate is not None

    def key_of(self, *args: Any, **kwargs: Any) -> str:
        """The call's key (``""`` without a key function): limits apply per key."""
        if self.key is None:
            return ""
        value = self.key(*args, **kwargs)
        if not isinstance(value, str):
            raise TypeError(f"a limit's key function must return a string, not {type(value).__name__}")
        return value

    def describe(self, key: str) -> str:
        """How a held-back call's ``waiting_on`` names the limit."""
        parts = []
        if self.concurrency is not None:
            parts.append(f"{self.concurrency} at once")
        if self.rate is not None:
            parts.append(f"{self.rate.count} per {self.rate.period_ms / 1000:g}s")
        text = ", ".join(parts)
        return f": {text}" + (f" for key {key!r}" if key else "")


def limit_id(kind: str, name: str, key: str) -> str:
    """The id of one limit: a task's (``t``) or a workflow's (``w``) name and the call's key."""
    return f"{kind}\t{name}\t{key}"
