"""Work whose data Redis cannot read (a key of the wrong type under the prefix) is set aside, alone: the rest of
its batch goes on (claims, timers, bus messages), nothing is lost, and it runs once the key is right again
(its retry timer, a minute later: skipped here with the environment's clock)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import set_aside_app
from support import eventually

from bdurable import Settings, Status
from bdurable.testing import WorkflowEnvironment


@pytest.fixture
def redis_url(settings: Settings) -> str:
    """The suite's server, shared: each environment runs on a fresh prefix of its own."""
    return settings.redis_url


@asynccontextmanager
async def spoiled(env: WorkflowEnvironment, key: str) -> AsyncIterator[None]:
    """``key`` holds a string while the block runs (its real value, if any, kept aside and put back after)."""
    redis, kept = env.client.store.redis, f"{key}:kept"
    had = await redis.exists(key)
    if had:
        await redis.rename(key, kept)
    await redis.set(key, "not what b-durable wrote")
    try:
        yield
    finally:
        await redis.delete(key)
        if had:
            await redis.rename(kept, key)


async def set_aside(env: WorkflowEnvironment, workflow_id: str) -> dict[str, str]:
    """The work set aside on the workflow's shard: retry timer -> error (those naming the workflow)."""
    shard = env.client.keys.for_workflow(workflow_id)
    faults = await env.client.store.redis.hgetall(shard.faults)
    return {member: json.loads(why)["error"] for member, why in faults.items() if workflow_id in member}


def key_of(env: WorkflowEnvironment, which: str, workflow_id: str, name: str) -> str:
    """One of the keys a delivery uses: the workflow's own call records or inbox, or the liveness of its
    workflow's versions, which all its workflows share (a delivery fails there only after it recorded the
    result, when it queues the workflow's next step)."""
    shard = env.client.keys.for_workflow(workflow_id)
    if which == "liveness":
        return shard.live(name)
    return shard.calls(workflow_id) if which == "calls" else shard.inbox(workflow_id)


KEYS = ["calls", "inbox", "liveness"]


async def start_all(env: WorkflowEnvironment, ids: list[str], workflow: Any, value: Any, status: str) -> None:
    """Start ``workflow(value)`` under each id, and wait until every one of them is ``status``."""
    for workflow_id in ids:
        await env.client.start(workflow, value, workflow_id=workflow_id)
    for workflow_id in ids:
        await eventually(lambda workflow_id=workflow_id: status_is(env, workflow_id, status))


async def status_is(env: WorkflowEnvironment, workflow_id: str, status: str) -> bool:
    state = await env.client.get_state(workflow_id)
    return state is not None and state.status == status


@pytest.mark.timeout(60)
async def test_a_step_redis_cannot_read_is_set_aside_and_the_rest_of_its_shard_runs(redis_url: str) -> None:
    async with WorkflowEnvironment([set_aside_app], redis_url=redis_url, time_skipping=True) as env:
        calls = env.client.keys.for_workflow("spoiled").calls("spoiled")
        async with spoiled(env, calls):
            await env.client.start(set_aside_app.one_task, 0, workflow_id="spoiled")  # first in line
            healthy = [await env.client.start(set_aside_app.one_task, i) for i in range(1, 31)]
            for i, handle in enumerate(healthy, 1):
                assert await handle.result(timeout=20) == i  # the claims went on past it
            assert (await set_aside(env, "spoiled")).get("f|w|spoiled", "").startswith("WRONGTYPE")
            assert await status_is(env, "spoiled", Status.RUNNING)
        await env.sleep("61s")  # its retry timer: back on its queue, and the key is right again
        assert await env.client.result("spoiled", timeout=10) == 0
        assert await set_aside(env, "spoiled") == {}  # the fault is gone once it worked


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", KEYS)
async def test_a_timer_whose_workflow_redis_cannot_read_never_takes_the_other_timers_with_it(
    redis_url: str, which: str
) -> None:
    async with WorkflowEnvironment([set_aside_app], redis_url=redis_url, time_skipping=True) as env:
        ids = ["nap-spoiled", *(f"nap-{i}" for i in range(10))]
        shared = which == "liveness"  # every workflow of the name needs it: the others fail too, and are retried
        others = [] if shared else ids[1:]
        await start_all(env, ids, set_aside_app.naps, 1, Status.SLEEPING)
        async with spoiled(env, key_of(env, which, ids[0], set_aside_app.naps.name)):
            await env.sleep("2h")  # every timer falls due in the same pass
            for workflow_id in others:
                assert await env.client.result(workflow_id, timeout=10) == "rested"
            faults = await set_aside(env, ids[0])
            assert await status_is(env, ids[0], Status.SLEEPING)
            [(member, error)] = faults.items()
            assert member.startswith("s|")
            assert error.startswith("WRONGTYPE")
        await env.sleep("61s")
        for workflow_id in ids:  # its wake-up was kept, not lost, nor half done
            assert await env.client.result(workflow_id, timeout=10) == "rested"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("which", KEYS)
async def test_an_event_for_a_workflow_redis_cannot_read_is_kept_and_the_bus_goes_on(
    redis_url: str, which: str
) -> None:
    async with WorkflowEnvironment([set_aside_app], redis_url=redis_url, time_skipping=True) as env:
        ids = ["waits-spoiled", *(f"waits-{i}" for i in range(10))]
        await start_all(env, ids, set_aside_app.waits, "go", Status.AWAITING_EVENT)
        async with spoiled(env, key_of(env, which, ids[0], set_aside_app.waits.name)):
            for i, workflow_id in enumerate(ids):
                await env.client.send_event(workflow_id, "go", i)
            if which != "liveness":  # else every one of them fails, as it should
                for i, workflow_id in enumerate(ids[1:], 1):
                    assert await env.client.result(workflow_id, timeout=10) == i
            await eventually(lambda: set_aside(env, ids[0]))
            [(member, error)] = (await set_aside(env, ids[0])).items()
            assert member.startswith("b|")
            assert error.startswith("WRONGTYPE")
        await env.sleep("61s")  # the message goes back on the bus, and is delivered (once: not also buffered)
        for i, workflow_id in enumerate(ids):
            assert await env.client.result(workflow_id, timeout=10) == i
            assert (
                await env.client.store.redis.exists(env.client.keys.for_workflow(workflow_id).events(workflow_id)) == 0
            )
