"""100,000 result() calls of 10,000 workflows wait under load while their shared pub/sub reader is killed and
Redis is restarted: every one of them returns the right result (issue: a batch of result() calls never
returned). The calls of one workflow share one wait, so 10,000 channels are followed on one connection."""

from __future__ import annotations

import asyncio
import time

import bus_app
import pytest
from faultkit import OwnRedis, report
from support import InProcessRoles, eventually, within

from bdurable import Client, Status
from bdurable.store import REDIS_ERRORS

WORKFLOWS = 10_000  # 10,000 channels on the one subscription connection
WAITERS_EACH = 10  # 100,000 result() calls in all


@pytest.mark.timeout(600)
async def test_a_hundred_thousand_waiters_all_return_through_a_killed_reader_and_a_redis_restart(
    own_redis: OwnRedis,
) -> None:
    o = own_redis
    roles = InProcessRoles(o.settings)
    roles.signal_bus()
    roles.dispatcher(bus_app, concurrency=200)
    ids = [f"waited-{i:05d}" for i in range(WORKFLOWS)]
    try:
        for chunk in range(0, WORKFLOWS, 500):
            batch = ids[chunk : chunk + 500]
            await asyncio.gather(*(o.client.start(bus_app.wait_events, {"name": "go"}, workflow_id=w) for w in batch))

        async def all_waiting() -> bool:
            return (await o.client.reads.counts())[Status.AWAITING_EVENT] == WORKFLOWS

        await eventually(all_waiting, timeout=60, interval=0.2)
        async with Client(settings=o.settings) as waiting:  # one client: one shared subscription connection
            began = time.monotonic()
            waiters = [
                asyncio.create_task(waiting.result(workflow_id, timeout=180))
                for workflow_id in ids
                for _ in range(WAITERS_EACH)
            ]
            await asyncio.sleep(2.0)  # they are subscribed and waiting
            subscriptions = waiting._subscriptions
            assert subscriptions is not None
            for index, workflow_id in enumerate(ids):
                if index == WORKFLOWS // 4:
                    reader = subscriptions._reader
                    assert reader is not None
                    reader.cancel()  # the shared reader dies
                if index == WORKFLOWS // 2:
                    o.server.kill()  # Redis restarts (SIGKILL; AOF fsync always: nothing acknowledged is lost)
                    await asyncio.sleep(0.5)
                    o.server.start()
                await _send(o.client, workflow_id, index)
            results = await within(240, asyncio.gather(*waiters))
            elapsed = time.monotonic() - began
        expected = [[index] for index in range(WORKFLOWS) for _ in range(WAITERS_EACH)]
        assert results == expected
        report(
            "waiting_under_load",
            {"result_calls": len(waiters), "seconds": round(elapsed, 1), "reader_restarts": subscriptions.restarts},
        )
    finally:
        await roles.stop_all()


async def _send(client: Client, workflow_id: str, index: int) -> None:
    """Send the event, through the Redis restart (the client retries until Redis answers again)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            await client.send_event(workflow_id, "go", index)
            return
        except REDIS_ERRORS:
            assert time.monotonic() < deadline, "Redis did not come back"
            await asyncio.sleep(0.1)
