"""No waiter ever misses a finish (issue: a batch of result() calls waited minutes for completed workflows).

The two races behind it, injected deterministically: a SUBSCRIBE that reaches Redis only after the finish was
published (redis-py does not wait for its reply, and the state is read on another connection), and a shared
reader that dies while waiters wait. The slow re-check is turned off here, so only the guards under test
can save the waiter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time
from typing import Any

import bus_app
import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from support import InProcessRoles, eventually, within

from bdurable import Client, InvalidInputError, ResultTimeoutError, Settings, Status, WorkflowNotFoundError
from bdurable.embedded import RedisServer
from bdurable.pubsub import Subscriptions


def no_recheck(client: Client) -> Subscriptions:
    subscriptions = Subscriptions(client.store.pubsub, client.keys.keepalive_channel, recheck_every=3600)
    client._subscriptions = subscriptions  # the waiter may only rely on the guards under test
    return subscriptions


async def waiting_for_go(client: Client, handle: Any) -> None:
    async def waits() -> bool:
        state = await client.get_state(handle.workflow_id)
        return state is not None and state.status == Status.AWAITING_EVENT

    await eventually(waits, timeout=5)


async def waiting_workflows(client: Client, roles: InProcessRoles, count: int) -> list[Any]:
    """``count`` workflows waiting for their "go" event, with the roles that run them."""
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handles = [await client.start(bus_app.wait_events, {"name": "go"}) for _ in range(count)]
    for handle in handles:
        await waiting_for_go(client, handle)
    return handles


async def test_a_subscription_that_lands_after_the_finish_still_sees_it(
    client: Client, roles: InProcessRoles, monkeypatch: pytest.MonkeyPatch
) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.wait_events, {"name": "go"})
    await waiting_for_go(client, handle)
    no_recheck(client)
    sent = asyncio.Event()
    original = PubSub.execute_command

    async def late(self: PubSub, *args: Any) -> None:
        if args[0] != "SUBSCRIBE":
            return await original(self, *args)  # type: ignore[no-any-return]

        # The SUBSCRIBE leaves, but reaches Redis only after the workflow finished and published the finish.
        await self.connect()

        async def deliver() -> None:
            await sent.wait()
            await original(self, *args)

        asyncio.get_running_loop().create_task(deliver())
        return None

    monkeypatch.setattr(PubSub, "execute_command", late)
    waiter = asyncio.create_task(client.result(handle.workflow_id, timeout=10))
    await asyncio.sleep(0.3)  # result() is waiting for its subscription to be confirmed: it has read nothing yet
    assert not waiter.done()
    await client.send_event(handle.workflow_id, "go", 1)
    await eventually(lambda: _finished(client, handle.workflow_id), timeout=5)  # published while unsubscribed
    sent.set()
    assert await within(5, waiter) == [1]


async def test_waiters_outlive_their_reader_being_killed(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handles = [await client.start(bus_app.wait_events, {"name": "go"}) for _ in range(20)]
    for handle in handles:
        await waiting_for_go(client, handle)
    subscriptions = no_recheck(client)
    waiters = [asyncio.create_task(client.result(h.workflow_id, timeout=15)) for h in handles]
    await eventually(lambda: subscriptions._reader is not None, timeout=5)
    for index, handle in enumerate(handles):
        if index % 5 == 0:
            reader = subscriptions._reader
            assert reader is not None
            reader.cancel()  # the reader dies (as it did on a failed read): it must come back
            await asyncio.sleep(0.05)
        await client.send_event(handle.workflow_id, "go", index)
    assert await asyncio.gather(*waiters) == [[i] for i in range(20)]
    assert subscriptions.restarts >= 4


async def _finished(client: Client, workflow_id: str) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and state.finished


async def test_a_result_that_times_out_names_the_status_it_last_read(client: Client, roles: InProcessRoles) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.wait_events, {"name": "go"})
    await waiting_for_go(client, handle)
    with pytest.raises(TimeoutError, match=r"did not finish within 0.3s \(last read AWAITING_EVENT\)$") as raised:
        await client.result(handle.workflow_id, timeout=0.3)
    assert isinstance(raised.value, ResultTimeoutError)  # a DurableError too: the seed's pattern works on it
    assert raised.value.is_cancellation is False
    await client.send_event(handle.workflow_id, "go", 1)
    assert await client.result(handle.workflow_id, timeout=10) == [1]  # the timed-out wait left nothing behind


async def test_a_result_with_a_zero_timeout_looks_once_and_never_waits(client: Client, roles: InProcessRoles) -> None:
    """``timeout=0`` is a look: the output of a finished workflow, ``ResultTimeoutError`` at once otherwise; a
    negative timeout is a mistake, said as such (it used to blame Redis for a finished workflow's timeout)."""
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.wait_events, {"name": "go"})
    await waiting_for_go(client, handle)
    with pytest.raises(ResultTimeoutError, match=r"has not finished \(read AWAITING_EVENT\)$"):
        await client.result(handle.workflow_id, timeout=0)
    await client.send_event(handle.workflow_id, "go", 1)
    assert await client.result(handle.workflow_id, timeout=10) == [1]
    assert await client.result(handle.workflow_id, timeout=0) == [1]
    assert await handle.result(timeout=0) == [1]
    for wrong in (-1, float("nan")):
        with pytest.raises(InvalidInputError, match="timeout must be None or >= 0 seconds"):
            await client.result(handle.workflow_id, timeout=wrong)
    with pytest.raises(WorkflowNotFoundError):
        await client.result("nobody-has-this-id", timeout=0)


async def test_a_timed_out_result_names_the_latest_status_not_the_first(client: Client, roles: InProcessRoles) -> None:
    """The wait read RUNNING (a task in flight); the workflow then waits for an event: the timeout says so."""
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.wait_after_task, {"token": "latest-status", "task_seconds": 0.3})
    with pytest.raises(ResultTimeoutError, match=r"\(last read AWAITING_EVENT\)$"):
        await client.result(handle.workflow_id, timeout=2.0)
    await client.send_event(handle.workflow_id, "go", 1)
    assert await client.result(handle.workflow_id, timeout=10) == 1


async def test_a_subscription_write_that_hangs_holds_up_no_other_waiter(
    client: Client, roles: InProcessRoles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One waiter leaves and the UNSUBSCRIBE it causes never completes (a write stuck on a saturated connection):
    the other waiters still get their finish, and the leaving one still ends at its timeout (both used to wait
    behind that write, for ever)."""
    first, second = await waiting_workflows(client, roles, 2)
    no_recheck(client)  # only the finish message can end the wait
    stuck = asyncio.Event()
    original = PubSub.execute_command

    async def hangs_on_unsubscribe(self: PubSub, *args: Any) -> Any:
        if args[0] == "UNSUBSCRIBE":
            stuck.set()
            await asyncio.Event().wait()  # never completes
        return await original(self, *args)

    monkeypatch.setattr(PubSub, "execute_command", hangs_on_unsubscribe)
    waiting = asyncio.create_task(client.result(first.workflow_id, timeout=10))
    with pytest.raises(TimeoutError, match="last read AWAITING_EVENT"):
        await within(5, client.result(second.workflow_id, timeout=0.5))  # leaves: its channel is unsubscribed
    await within(5, stuck.wait())
    await client.send_event(first.workflow_id, "go", 1)
    assert await within(5, waiting) == [1]


async def test_concurrent_results_of_one_workflow_share_one_wait(client: Client, roles: InProcessRoles) -> None:
    """A thousand result() calls of one workflow make one subscription and one read per look; each keeps its own
    timeout, and the shared wait stops once nobody waits for it."""
    handle, other = await waiting_workflows(client, roles, 2)
    calls = [asyncio.create_task(client.result(handle.workflow_id, timeout=10)) for _ in range(1000)]
    impatient = [asyncio.create_task(client.result(handle.workflow_id, timeout=0.3)) for _ in range(10)]
    for call in impatient:
        with pytest.raises(TimeoutError, match="last read AWAITING_EVENT"):
            await within(5, call)
    subscriptions = client._subscriptions
    assert subscriptions is not None
    assert [len(entry.waiters) for entry in subscriptions._channels.values()] == [1]
    await client.send_event(handle.workflow_id, "go", 1)
    assert await within(10, asyncio.gather(*calls)) == [[1]] * 1000
    assert not subscriptions._channels

    alone = asyncio.create_task(client.result(other.workflow_id, timeout=10))
    await eventually(lambda: subscriptions._channels, timeout=5)
    alone.cancel()  # its only caller gave up: the shared wait stops and leaves its channel
    await eventually(lambda: not subscriptions._channels, timeout=5)
    assert not client._finish_waits._waits


async def test_notifications_never_wait_for_a_saturated_command_pool(client: Client, settings: Settings) -> None:
    """Every connection of the client's command pool is taken (a burst of slow commands): a new subscription is
    still confirmed, its messages still arrive, and so they do again after its connection is killed (the new
    connection used to wait for the command pool, up to its 30 s timeout, with every notification behind it)."""
    if client.store.cluster:
        pytest.skip("a cluster's pub/sub borrows a connection of a node's pool, which never waits (Store.pubsub)")
    subscriptions = no_recheck(client)
    pool = client.store.redis.connection_pool
    taken = [await pool.get_connection() for _ in range(pool.max_connections)]
    outside = aioredis.from_url(settings.redis_url, decode_responses=True)
    channel = client.keys.workflow_channel("saturated")
    try:
        async with subscriptions.follow(channel) as waiter:
            assert subscriptions._channels[channel].confirmed.is_set()
            await outside.publish(channel, '{"status": "RUNNING"}')
            assert await within(3, waiter.next()) == {"status": "RUNNING"}

            assert await outside.client_kill_filter(_type="pubsub") >= 1
            assert await within(3, waiter.next()) is None  # re-subscribed on a new connection: look again
            await outside.publish(channel, '{"status": "COMPLETED"}')
            assert await within(3, waiter.next()) == {"status": "COMPLETED"}
        assert len(pool._in_use_connections) == pool.max_connections  # the pool was never freed meanwhile
    finally:
        for connection in taken:
            await pool.release(connection)
        await outside.aclose()


async def bytes_sent_by_redis(client: Client) -> int:
    """What the server has written to all its clients so far (summed over a cluster's primaries)."""
    redis = client.store.redis
    if client.store.cluster:
        per_node = await redis.info("stats", target_nodes=redis.get_primaries())
        return sum(int(stats["total_net_output_bytes"]) for stats in per_node.values())
    return int((await redis.info("stats"))["total_net_output_bytes"])


async def test_results_read_the_outcome_never_the_input(client: Client, roles: InProcessRoles) -> None:
    """result() needs the status and the outcome: waits on workflows with big inputs (up to max_payload each)
    must not move those inputs from Redis, let alone parse or decrypt them."""
    roles.signal_bus()
    roles.dispatcher(bus_app)
    count, pad = 40, secrets.token_hex(50_000)  # random: compression (compress_above) cannot shrink it away
    handles = await client.start_many(bus_app.wait_events, [{"name": "go", "pad": pad}] * count)
    for handle in handles:
        await waiting_for_go(client, handle)
    waiting = [asyncio.create_task(client.result(handle.workflow_id, timeout=10)) for handle in handles]
    for handle in handles:
        await client.send_event(handle.workflow_id, "go", 1)
    assert await within(10, asyncio.gather(*waiting)) == [[1]] * count  # waited, then finished

    before = await bytes_sent_by_redis(client)
    assert await within(10, asyncio.gather(*(client.result(h.workflow_id) for h in handles))) == [[1]] * count
    sent = await bytes_sent_by_redis(client) - before
    assert sent < count * len(pad) // 10, f"{sent} bytes read for {count} results"


async def test_signals_of_a_workflow_that_vanishes_raise_rather_than_end_as_if_it_finished(settings: Settings) -> None:
    """Redis restarted without its data while signals() followed a workflow: the follower raises
    WorkflowNotFoundError, as watch() and result() do, instead of ending as a finished workflow's signals end."""
    with RedisServer(appendonly=False) as server:
        own = dataclasses.replace(settings, redis_url=server.url)
        async with Client(settings=own) as client:
            handle = await client.start(bus_app.wait_events, {"name": "go"})  # no dispatcher: it never runs
            following = asyncio.create_task(_all_signals(client, handle.workflow_id))
            await asyncio.sleep(0.5)
            server.stop()
            gone = pytest.raises(WorkflowNotFoundError, match="expired while its signals were followed")
            with RedisServer(port=server.port, appendonly=False), gone:  # back, empty
                async with asyncio.timeout(30):
                    await following


async def _all_signals(client: Client, workflow_id: str) -> list[Any]:
    return [signal async for signal in client.signals(workflow_id)]


def test_a_cli_result_that_times_out_in_an_outage_prints_one_json_document(settings: Settings) -> None:
    """`bdurable result --json --timeout` while Redis goes away: the client's log lines about the outage stay off
    stdout, which holds the one document, with the status the wait last read; and the timeout holds."""
    with RedisServer(appendonly=False) as server:
        own = dataclasses.replace(settings, redis_url=server.url)

        async def start() -> str:
            async with Client(settings=own) as client:
                return (await client.start(bus_app.wait_events, {"name": "go"})).workflow_id

        workflow_id = asyncio.run(start())
        environment = {
            **os.environ, "BDURABLE_REDIS_URL": server.url, "BDURABLE_PREFIX": own.prefix,
            "BDURABLE_SHARDS": str(own.shards),
        }  # fmt: skip
        environment.pop("BDURABLE_LOG_LEVEL", None)
        began = time.monotonic()
        waiting = subprocess.Popen(
            [sys.executable, "-m", "bdurable.cli", "result", workflow_id, "--json", "--timeout", "4"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        )  # fmt: skip
        time.sleep(1.5)
        server.stop()
        out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 124, err
    assert json.loads(out) == {"workflow_id": workflow_id, "status": "RUNNING"}, out
    assert time.monotonic() - began < 7  # not the timeout plus a read that waits for a socket timeout
    assert "(last read RUNNING)" in err
