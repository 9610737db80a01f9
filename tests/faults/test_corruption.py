"""Corrupt data planted in one workflow's keys (as a bad migration, a manual edit or a bug might leave
it): that workflow must end FAILED with a clear error, and every other workflow must run on, with every
dispatcher alive."""

from __future__ import annotations

import json
from typing import cast

import fault_app
import pytest
import redis.asyncio as aioredis
from faultkit import Fleet, held_by, report, shard, statuses, text_hash, wait_finished
from support import eventually

from bdurable import Client, Settings
from bdurable.keys import ShardKeys
from bdurable.wire import timer_member

# kind -> what is planted
TEXT_CORRUPTIONS = {
    "inbox-not-json": "an inbox entry that is not JSON",
    "inbox-wrong-shape": "an inbox entry that is JSON without a seq",
    "call-not-json": "a call record that is not JSON",
    "call-wrong-type": "a call record that is a JSON list",
    "input-not-json": "an input that is not JSON",
}


async def _plant(raw: aioredis.Redis, bytes_client: aioredis.Redis, t: ShardKeys, wf: str, kind: str) -> None:
    if kind == "inbox-not-json":
        await raw.rpush(t.inbox(wf), "garbage{")
    elif kind == "inbox-wrong-shape":
        await raw.rpush(t.inbox(wf), '{"oops": 1}')
    elif kind == "call-not-json":
        await raw.hset(t.calls(wf), "1", "garbage{")
    elif kind == "call-wrong-type":
        await raw.hset(t.calls(wf), "1", "[1, 2]")
    elif kind == "input-not-json":
        await raw.hset(t.wf(wf), "input", "garbage{")
    elif kind == "inbox-not-utf8":
        await bytes_client.rpush(t.inbox(wf).encode(), b"\xff\xfe garbage")
    else:
        raise AssertionError(kind)


async def _run_corruptions(
    fleet: Fleet, client: Client, raw: aioredis.Redis, settings: Settings, kinds: list[str]
) -> dict[str, dict[str, str]]:
    """Victims wait for an event; their keys are corrupted; a fresh dispatcher (no cached copies, so it
    reads every key) gets the events and a backlog of bystanders. Returns each victim's outcome."""
    prefix, t = settings.prefix, shard(settings.prefix)
    fleet.support_roles()
    first = fleet.dispatcher()
    victims = {f"victim-{kind}": kind for kind in kinds}
    for wf in victims:
        await client.start(fault_app.waiter, {}, workflow_id=wf)

    async def waiting() -> bool:
        return set((await statuses(raw, prefix, victims)).values()) == {"AWAITING_EVENT"}

    await eventually(waiting, timeout=15)
    bytes_client = aioredis.Redis.from_url(settings.redis_url)
    try:
        for wf, kind in victims.items():
            await _plant(raw, bytes_client, t, wf, kind)
    finally:
        await bytes_client.aclose()
    fleet.kill(first)  # its cached copies would hide the corruption of call records and input
    dispatchers = [fleet.dispatcher(), fleet.dispatcher()]
    for wf in victims:
        await client.send_event(wf, "go", {"for": wf})
    bystanders = [f"bystander-{i:02d}" for i in range(20)]
    for wf in bystanders:
        await client.start(fault_app.five_steps, {"delay": 0.1}, workflow_id=wf)

    found = await wait_finished(raw, prefix, bystanders, timeout=15)
    found.update(await wait_finished(raw, prefix, victims, timeout=5))
    outcomes: dict[str, dict[str, str]] = {}
    for wf, kind in victims.items():
        state = await text_hash(raw, t.wf(wf))  # raw: the client cannot decode a corrupt input
        error = json.loads(state["error"]) if state.get("error") else None
        held = [pid for pid in (d.pid for d in dispatchers) if f"w|{wf}" in await held_by(raw, prefix, pid)]
        outcomes[kind] = {
            "status": state["status"],
            "waiting_on": state.get("waiting_on", ""),
            "error": f"{error['type']}: {error['message']}" if error else "",
            "stranded_in_a_processing_hash": str(bool(held)),
        }
    crashed = [e.get("error") for e in fleet.events("dispatcher crashed")]
    item_crashes = [e.get("error") for e in fleet.events("work item crashed")]
    report(
        "corruption",
        {
            "outcomes": outcomes,
            "dispatcher_crashes": crashed,
            "work_item_crashes": item_crashes,
            "bystanders_completed": sum(1 for wf in bystanders if found[wf] == "COMPLETED"),
        },
    )
    alive = [d.poll() is None for d in dispatchers]
    assert all(alive), f"a dispatcher exited: {crashed}"
    stalled = {wf: found[wf] for wf in bystanders if found[wf] != "COMPLETED"}
    assert not stalled, f"{len(stalled)} of {len(bystanders)} bystanders stalled: {stalled}"
    return outcomes


@pytest.mark.timeout(90)
async def test_corrupt_records_fail_only_their_workflow(
    fleet: Fleet, client: Client, raw: aioredis.Redis, settings: Settings
) -> None:
    outcomes = await _run_corruptions(fleet, client, raw, settings, list(TEXT_CORRUPTIONS))
    not_failed = {kind: o for kind, o in outcomes.items() if o["status"] != "FAILED" or not o["error"]}
    assert not not_failed, f"corrupted workflows not FAILED with an error: {not_failed}"


@pytest.mark.timeout(90)
async def test_non_utf8_bytes_fail_only_their_workflow(
    fleet: Fleet, client: Client, raw: aioredis.Redis, settings: Settings
) -> None:
    outcomes = await _run_corruptions(fleet, client, raw, settings, ["inbox-not-utf8"])
    assert outcomes["inbox-not-utf8"]["status"] == "FAILED", outcomes


@pytest.mark.timeout(90)
async def test_corrupt_task_arguments_dead_letter_the_task(
    fleet: Fleet, client: Client, raw: aioredis.Redis, settings: Settings
) -> None:
    prefix, t = settings.prefix, shard(settings.prefix)
    fleet.support_roles()
    fleet.dispatcher()
    await client.start(fault_app.flaky_flow, {}, workflow_id="victim-task-args")
    task_key = t.task("victim-task-args", 1)
    await eventually(
        lambda: raw.zscore(t.timers, timer_member("r", "victim-task-args", 1)), timeout=15
    )  # waits to retry
    await raw.hset(task_key, "args", "garbage{")
    bystanders = [f"bystander-{i:02d}" for i in range(10)]
    for wf in bystanders:
        await client.start(fault_app.five_steps, {"delay": 0.1}, workflow_id=wf)
    found = await wait_finished(raw, prefix, ["victim-task-args", *bystanders], timeout=20)
    state = await client.get_state("victim-task-args")
    assert state is not None
    report("corrupt_task_args", {"status": state.status, "error": state.error and state.error["message"]})
    assert found["victim-task-args"] == "FAILED"
    assert state.error is not None
    assert state.error["type"] == "TaskFailedError"
    entries = cast(list[str], await raw.zrange(t.dlq, 0, -1))
    assert len(entries) == 1
    assert "JSON" in (await text_hash(raw, t.dlq_entry(entries[0])))["error"]
    assert all(found[wf] == "COMPLETED" for wf in bystanders)
    assert all(d.poll() is None for d in fleet.dispatchers)
