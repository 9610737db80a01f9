"""The dispatcher's cache of workflow runs between steps is bounded by a count and by payload bytes, so runs
with large payloads cannot take a dispatcher's memory (``BDURABLE_RUN_CACHE_BYTES``)."""

from __future__ import annotations

from dataclasses import dataclass

from bdurable.services.dispatcher.steps import RunCache


@dataclass
class FakeRun:
    footprint: int
    closed: bool = False

    def close(self) -> None:
        self.closed = True


def test_the_least_recently_used_runs_go_first_when_the_bytes_run_out() -> None:
    cache = RunCache(100, max_bytes=3_000_000)
    runs = {name: FakeRun(1_000_000) for name in "abcd"}
    for name in "abc":
        cache.keep(name, runs[name])  # type: ignore[arg-type]
    assert cache.take("a") is runs["a"]  # used again: now the most recent
    cache.keep("a", runs["a"])  # type: ignore[arg-type]
    cache.keep("d", runs["d"])  # type: ignore[arg-type]  # 4 MB > 3 MB: "b", least recently used, goes
    assert runs["b"].closed
    assert not any(runs[name].closed for name in "acd")
    assert cache.bytes == 3_000_000
    assert len(cache) == 3


def test_a_run_larger_than_the_whole_cache_is_not_kept() -> None:
    cache = RunCache(100, max_bytes=1000)
    huge, small = FakeRun(5000), FakeRun(10)
    cache.keep("small", small)  # type: ignore[arg-type]
    cache.keep("huge", huge)  # type: ignore[arg-type]
    assert huge.closed
    assert not small.closed
    assert cache.take("huge") is None
    assert cache.bytes == 10


def test_the_count_still_bounds_it() -> None:
    cache = RunCache(2, max_bytes=10**9)
    runs = [FakeRun(1) for _ in range(3)]
    for index, run in enumerate(runs):
        cache.keep(str(index), run)  # type: ignore[arg-type]
    assert [run.closed for run in runs] == [True, False, False]


def test_keeping_a_run_again_counts_its_new_size_once() -> None:
    cache = RunCache(10, max_bytes=10**6)
    run = FakeRun(100)
    cache.keep("a", run)  # type: ignore[arg-type]
    run.footprint = 250  # it grew by a step
    cache.keep("a", run)  # type: ignore[arg-type]
    assert cache.bytes == 250
    cache.clear()
    assert cache.bytes == 0
    assert run.closed


def test_a_peek_leaves_the_run_cached_and_in_its_place_in_line() -> None:
    cache = RunCache(2)
    runs = {name: FakeRun(10) for name in "abc"}
    cache.keep("a", runs["a"])  # type: ignore[arg-type]
    cache.keep("b", runs["b"])  # type: ignore[arg-type]
    assert cache.peek("a") is runs["a"]
    assert cache.peek("z") is None
    assert (len(cache), cache.bytes) == (2, 20)
    cache.keep("c", runs["c"])  # type: ignore[arg-type]  # "a" is still the least recently used: it goes
    assert runs["a"].closed
    assert not runs["b"].closed
