"""Duration and size strings alone."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bdurable.durations import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("30m", 1800), ("1h30m", 5400), ("7 days", 604800), ("2 weeks", 1209600),
     (45, 45), (1.5, 1.5), (timedelta(hours=1), 3600)],
)  # fmt: skip
def test_durations(text: str | float | timedelta, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "5 parsecs", "-1s", "1h-3m"])
def test_bad_durations_are_refused_clearly(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize("huge", ["500000 weeks", "99999999999999999999weeks", 1e15, timedelta(days=400_000)])
def test_durations_beyond_a_thousand_years_are_refused(huge: str | float | timedelta) -> None:
    # In ms such a time overflows what dates hold (year 11552: a schedule that could not be listed) or, wrapped
    # past 2**63, lands in the past (a delayed start that ran at once).
    with pytest.raises(ValueError, match="at most 1000 years"):
        parse_duration(huge)
    assert parse_duration("52000 weeks") == 52000 * 604800  # just under: fine


@pytest.mark.parametrize(
    ("text", "size"), [("64KiB", 65536), ("1MiB", 1048576), ("1MB", 1_000_000), ("512", 512), ("10KB", 10_000)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_bad_sizes_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size("lots")
