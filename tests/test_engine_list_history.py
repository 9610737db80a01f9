"""Listing workflows (filters, pagination) and reading a workflow's recorded history."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import engine_app
import pytest
from support import InProcessRoles, eventually

from bdurable import Client, InvalidInputError, Status, WorkflowNotFoundError


async def all_pages(client: Client, **filters: object) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await client.list(cursor=cursor, **filters)  # type: ignore[arg-type]
        pages.append([s.workflow_id for s in page.items])
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 20, "pagination does not end"


async def test_list_filters_by_status_and_name(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)  # no scheduler: the sleepers stay asleep
    done = [await client.start(engine_app.quick, i, workflow_id=f"quick-{i}") for i in range(3)]
    asleep = [await client.start(engine_app.sleeper, {}, workflow_id=f"sleeper-{i}") for i in range(2)]
    for handle in done:
        await handle.result(timeout=5)

    async def all_asleep() -> bool:
        states = [await h.state() for h in asleep]
        return all(s is not None and s.status == Status.SLEEPING for s in states)

    await eventually(all_asleep, timeout=5)

    completed = await client.list(status="COMPLETED")
    assert sorted(s.workflow_id for s in completed.items) == ["quick-0", "quick-1", "quick-2"]
    assert all(s.status == Status.COMPLETED and s.output is not None for s in completed.items)
    assert completed.next_cursor is None
    sleeping = await client.list(status="SLEEPING")
    assert sorted(s.workflow_id for s in sleeping.items) == ["sleeper-0", "sleeper-1"]
    assert (await client.list(status="FAILED")).items == []
    by_name = await client.list(name="sleeper")
    assert sorted(s.workflow_id for s in by_name.items) == ["sleeper-0", "sleeper-1"]
    assert (await client.list(name="quick", status="SLEEPING")).items == []
    everything = await client.list()
    listed = [s.workflow_id for s in everything.items]
    assert sorted(listed) == sorted([*(h.workflow_id for h in done), *(h.workflow_id for h in asleep)])
    # newest first
    created = [s.created_at for s in everything.items]
    assert created == sorted(created, reverse=True)
    with pytest.raises(ValueError, match="unknown status"):
        await client.list(status="NAPPING")


async def test_pagination_walks_every_workflow_once(client: Client) -> None:
    # started back to back: many share a creation millisecond, which the cursor must handle
    ids = [f"wf-{i:02d}" for i in range(8)]
    await asyncio.gather(*(client.start(engine_app.quick, i, workflow_id=i_d) for i, i_d in enumerate(ids)))
    pages = await all_pages(client, limit=3)
    assert [len(p) for p in pages] == [3, 3, 2]
    flat = [i for page in pages for i in page]
    assert sorted(flat) == ids
    assert len(set(flat)) == len(flat)

    # with a name filter, other workflows interleaved
    others = [f"other-{i}" for i in range(4)]
    for other in others:
        await client.start(engine_app.sleeper, {}, workflow_id=other)
    named = await all_pages(client, name="quick", limit=3)
    assert [len(p) for p in named] == [3, 3, 2]
    assert sorted(i for page in named for i in page) == ids
    running = await all_pages(client, status="RUNNING", limit=5)
    assert [len(p) for p in running] == [5, 5, 2]
    assert sorted(i for page in running for i in page) == sorted(ids + others)


async def test_list_filters_by_version_id_prefix_and_creation_time(client: Client) -> None:
    # No dispatcher: every workflow stays RUNNING; each filter reads its index, none scans.
    first = [await client.start(engine_app.sleeper, {}, workflow_id=f"order-{i:02d}") for i in range(5)]
    await asyncio.sleep(0.02)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.02)
    later = [await client.start(engine_app.sleeper, {}, workflow_id=f"order-{i:02d}") for i in range(5, 9)]
    await client.start(engine_app.quick, 1, workflow_id="other-1")
    await client.start(engine_app.sleeper, {}, workflow_id="orders:x")  # shares the prefix "order"

    assert [s.workflow_id for s in (await client.list(version="1", name="quick")).items] == ["other-1"]
    assert (await client.list(version="2")).items == []
    since = await client.list(since=middle, name="sleeper")
    assert sorted(s.workflow_id for s in since.items) == sorted([h.workflow_id for h in later] + ["orders:x"])
    until = await client.list(until=middle)
    assert sorted(s.workflow_id for s in until.items) == sorted(h.workflow_id for h in first)

    by_prefix = await all_pages(client, prefix="order-", limit=4)  # by id, in pages
    assert by_prefix == [[f"order-{i:02d}" for i in range(4)], [f"order-{i:02d}" for i in range(4, 8)], ["order-08"]]
    assert [s.workflow_id for s in (await client.list(prefix="orders")).items] == ["orders:x"]
    assert (await client.list(prefix="order-0", status="COMPLETED")).items == []
    with pytest.raises(InvalidInputError, match="aware datetime"):
        await client.list(since=datetime(2026, 1, 1))


async def test_a_prefix_with_a_filter_finds_sparse_matches_across_batches_in_pages(client: Client) -> None:
    """An id prefix and a name: 1,500 ids under the prefix, three of the name, spread over several batches of
    the read (which judges ids on a few fields of their hash and reads only the matches whole)."""
    await client.start_many(engine_app.sleeper, [{}] * 1500, workflow_ids=[f"sp-{i:04d}" for i in range(1500)])
    named = ["sp-0001x", "sp-0700x", "sp-1499x"]
    for workflow_id in named:
        await client.start(engine_app.quick, 1, workflow_id=workflow_id)
    assert await all_pages(client, prefix="sp-", name="quick", limit=2) == [named[:2], named[2:]]
    assert await all_pages(client, prefix="sp-1", name="quick", limit=5) == [named[2:]]
    assert (await client.list(prefix="sp-", status="COMPLETED")).items == []


async def test_a_prefix_page_skips_an_expired_workflow_the_index_still_lists(client: Client) -> None:
    """Retention drops a finished workflow's hash at once and its id from the index at the next sweep: in
    between, a listing by prefix skips it and pages on (a page cut short by it must not end the listing)."""
    for i in range(6):
        await client.start(engine_app.sleeper, {}, workflow_id=f"st-{i}")
    await client.store.redis.delete(client.keys.for_workflow("st-2").wf("st-2"))  # expired, still indexed
    assert await all_pages(client, prefix="st-", limit=2) == [["st-0", "st-1"], ["st-3", "st-4"], ["st-5"]]
    assert await all_pages(client, prefix="st-", name="sleeper", limit=2) == [
        ["st-0", "st-1"],
        ["st-3", "st-4"],
        ["st-5"],
    ]


async def test_history_lists_each_durable_call_with_its_result(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    roles.scheduler()
    handle = await client.start(engine_app.history_flow, {})
    assert await client.result(handle.workflow_id, timeout=5) == 6
    history = await client.history(handle.workflow_id)
    assert [(h.seq, h.kind, h.name, h.status, h.result) for h in history] == [
        (1, "task", "engine_app.add", "done", 3),
        (2, "sleep", "50ms", "done", None),
        (3, "signal", "halfway", "done", None),
        (4, "child", "child_double", "done", 6),
    ]
    for entry in history:
        assert entry.started_at is not None
        assert entry.finished_at is not None
        assert entry.finished_at >= entry.started_at
    assert [h.started_at for h in history] == sorted(h.started_at for h in history)  # type: ignore[type-var]
    child = await client.history(f"{handle.workflow_id}:4")
    assert [(h.kind, h.name, h.result) for h in child] == [("task", "engine_app.double", 6)]
    with pytest.raises(WorkflowNotFoundError):
        await client.history("no-such-workflow")


async def test_history_of_a_failed_call_holds_its_error(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    handle = await client.start(engine_app.try_flow, {"token": "history"})
    await client.result(handle.workflow_id, timeout=5)
    failed, cleanup = await client.history(handle.workflow_id)
    assert (failed.kind, failed.status) == ("task", "failed")
    assert failed.result["type"] == "TaskFailedError"
    assert failed.result["error_type"] == "ValueError"
    assert failed.result["message"] == "boom"
    assert (cleanup.status, cleanup.result) == ("done", "finally")
