"""Parsing of the human duration and size strings used by ``ctx.sleep`` and the settings, and the one check of
the moments the API takes (aware datetimes)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from bdurable.errors import InvalidInputError

__all__ = ["aware_ms", "parse_duration", "parse_size"]

_UNIT_SECONDS: dict[str, float] = {
    "ms": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*")

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


MAX_DURATION = 1000 * 365.25 * 86400.0  # seconds: every sleep, delay, timeout, interval and setting stays within


def parse_duration(value: str | float | timedelta) -> float:
    """Return a duration in seconds.

    Accepts seconds as a number, a ``timedelta``, or a string such as ``"500ms"``, ``"30s"``, ``"1h30m"``,
    ``"7 days"`` or ``"2 weeks"``. Negative or unparseable values raise ``ValueError`` naming the input, so a
    typo in a setting fails at start instead of sleeping for a surprising time.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration_text(value)
    else:
        raise ValueError(f"invalid duration {value!r}: expected seconds, a timedelta or a string like '30s'")
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise ValueError(f"invalid duration {value!r}: must be a finite number of seconds >= 0")
    if seconds > MAX_DURATION:  # beyond, a time in ms overflows what timers and dates can hold
        raise ValueError(f"invalid duration {value!r}: at most 1000 years")
    return seconds


def _parse_duration_text(text: str) -> float:
    stripped = text.strip()
    if not stripped:
        raise ValueError("invalid duration '': empty")
    try:
        return float(stripped)
    except ValueError:
        pass
    total = 0.0
    position = 0
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: expected forms like '500ms', '30s', '1h30m', '7 days', '2 weeks'"
            )
        unit = match.group(2).lower()
        if unit not in _UNIT_SECONDS:
            raise ValueError(f"invalid duration {text!r}: unknown unit {match.group(2)!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[unit]
        position = match.end()
    return total


def parse_size(value: str | int) -> int:
    """Return a size in bytes from ``1048576``, ``"64KiB"``, ``"1MiB"``, ``"500KB"`` or ``"100B"``."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"invalid size {value!r}: must be positive")
        return value
    match = _SIZE.match(value)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r}: expected forms like '1048576', '64KiB', '1MiB', '500KB'")
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"invalid size {value!r}: must be positive")
    return size


def aware_ms(moment: datetime, what: str) -> int:
    """A moment given to the API (``what`` names it in errors), in ms since the epoch: an aware datetime only,
    since a naive one means a different instant on every machine."""
    value: object = moment  # callers may pass anything
    if not isinstance(value, datetime) or moment.tzinfo is None:
        raise InvalidInputError(f"{what} must be an aware datetime (with a timezone), not {moment!r}")
    return int(moment.timestamp() * 1000)
