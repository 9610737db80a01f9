"""Signals: emitted exactly once (never again on replay), published by the bus, replayed to late subscribers."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import bus_app
import pytest
from support import InProcessRoles, eventually, status_is, token, within

from bdurable import Client, Signal, Status, WorkflowNotFoundError
from bdurable.codec import loads
from bdurable.pubsub import Subscriptions


async def signal_log(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    key = client.keys.for_workflow(workflow_id).signals(workflow_id)
    return [loads(raw) for raw in await client.store.redis.lrange(key, 0, -1)]


async def collect(stream: AsyncIterator[Signal], into: list[Signal], count: int | None = None) -> None:
    async for signal in stream:
        into.append(signal)
        if count is not None and len(into) >= count:
            return


async def test_a_late_subscriber_gets_every_signal_from_the_first_then_live_ones(
    client: Client, roles: InProcessRoles
) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.signal_steps, {"before": 3, "rounds": 3})
    await eventually(lambda: status_is(client, handle.workflow_id, Status.AWAITING_EVENT), timeout=5)
    assert len(await signal_log(client, handle.workflow_id)) == 3  # emitted before anyone listened

    received: list[Signal] = []
    stream = client.signals(handle.workflow_id)
    await within(5, collect(stream, received, count=3))
    assert [s.payload for s in received] == [{"n": 0}, {"n": 1}, {"n": 2}]
    for n in range(3, 6):
        await client.send_event(handle.workflow_id, "go")
        await within(5, collect(stream, received, count=n + 1))  # live, one by one
        assert received[-1].payload == {"n": n}
    await within(5, collect(stream, received))  # ends when the workflow finishes
    assert await client.result(handle.workflow_id, timeout=5) == 6
    assert [s.name for s in received] == ["tick"] * 6
    assert [s.payload["n"] for s in received] == list(range(6))
    seqs = [s.seq for s in received]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 6
    assert all(a.at <= b.at for a, b in itertools.pairwise(received))


async def test_subscribing_to_a_finished_workflow_replays_its_log_and_ends(
    client: Client, roles: InProcessRoles
) -> None:
    roles.signal_bus()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.signal_steps, {"before": 4})
    assert await client.result(handle.workflow_id, timeout=5) == 4
    received: list[Signal] = []
    await within(5, collect(client.signals(handle.workflow_id), received))
    assert [s.payload["n"] for s in received] == [0, 1, 2, 3]


async def test_signals_of_an_unknown_workflow_raise_not_found(client: Client) -> None:
    with pytest.raises(WorkflowNotFoundError):
        await collect(client.signals("no-such-workflow"), [])


async def test_the_bus_publishes_each_signal_once_on_the_workflow_channel_and_the_firehose(
    client: Client, roles: InProcessRoles
) -> None:
    redis = client.store.redis
    pubsub = redis.pubsub()
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.signal_steps, {"rounds": 2})
    await pubsub.subscribe(client.keys.workflow_channel(handle.workflow_id), client.keys.signals_channel)
    try:
        await eventually(lambda: status_is(client, handle.workflow_id, Status.AWAITING_EVENT), timeout=5)
        roles.signal_bus()
        await client.send_event(handle.workflow_id, "go")
        await client.send_event(handle.workflow_id, "go")
        assert await client.result(handle.workflow_id, timeout=5) == 2
        on_channel: list[Any] = []
        on_firehose: list[Any] = []

        async def drain() -> None:
            while len(on_firehose) < 2 or len(on_channel) < 2:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                data = loads(message["data"])
                if message["channel"] == client.keys.signals_channel:
                    on_firehose.append(data)
                elif "signal" in data:
                    on_channel.append(data["signal"])

        await within(5, drain())
        await asyncio.sleep(0.2)
        while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)) is not None:
            data = loads(message["data"])
            assert message["channel"] != client.keys.signals_channel
            assert "signal" not in data, f"a signal was published twice: {data}"
        assert [s["payload"] for s in on_channel] == [{"n": 0}, {"n": 1}]
        assert [(f["workflow_id"], f["signal"]) for f in on_firehose] == [(handle.workflow_id, s) for s in on_channel]
        assert on_channel == await signal_log(client, handle.workflow_id)
    finally:
        await pubsub.aclose()


@pytest.mark.parametrize("cache_size", [0, 1])
async def test_signals_are_emitted_exactly_once_across_replays_from_scratch(
    client: Client, roles: InProcessRoles, cache_size: int
) -> None:
    roles.signal_bus()
    roles.scheduler()
    roles.dispatcher(bus_app, cache_size=cache_size)
    rounds = 4
    tokens = [token() for _ in range(3)]  # three runs share a cache of at most one: they evict each other
    handles = [await client.start(bus_app.signal_sleeps, {"token": t, "rounds": rounds}) for t in tokens]
    for handle in handles:
        assert await client.result(handle.workflow_id, timeout=10) == rounds
    for t, handle in zip(tokens, handles, strict=True):
        log = await signal_log(client, handle.workflow_id)
        seqs = [entry["seq"] for entry in log]
        assert len(seqs) == len(set(seqs)) == rounds + 1
        assert [e["name"] for e in log] == ["tick"] * rounds + ["done"]
        assert [e["payload"] for e in log[:rounds]] == [{"n": n} for n in range(rounds)]
        assert bus_app.CALLS[t] == list(range(rounds))
        history = await client.history(handle.workflow_id)
        assert [h.kind for h in history if h.kind == "signal"] == ["signal"] * (rounds + 1)
        state = await client.get_state(handle.workflow_id)
        assert state is not None
        assert state.step == len(history) == 3 * rounds + 1
        received: list[Signal] = []
        await within(5, collect(client.signals(handle.workflow_id), received))
        assert [s.seq for s in received] == seqs
    replays = sum(bus_app.ENTERED[t] for t in tokens) - len(tokens)
    if cache_size == 0:
        # Every step after the first replays the workflow from scratch (2 steps per round, plus the first).
        assert all(bus_app.ENTERED[t] == 2 * rounds + 1 for t in tokens)
    else:
        assert replays > 0


async def test_a_subscriber_survives_its_pubsub_connection_being_killed(
    client: Client, roles: InProcessRoles, monkeypatch: pytest.MonkeyPatch
) -> None:
    connections: list[float] = []
    original = Subscriptions._connect

    async def counted(self: Subscriptions, channels: list[str]) -> Any:
        connected = await original(self, channels)
        connections.append(asyncio.get_running_loop().time())
        return connected

    monkeypatch.setattr(Subscriptions, "_connect", counted)
    roles.signal_bus()
    roles.dispatcher(bus_app)
    rounds = 6
    handle = await client.start(bus_app.signal_steps, {"before": 1, "rounds": rounds})
    received: list[Signal] = []
    stream = client.signals(handle.workflow_id)
    await within(5, collect(stream, received, count=1))
    async with Client(settings=client.settings) as admin:
        for n in range(1, rounds + 1):
            # Our subscription is live again (the last signal came after its re-subscription): kill it.
            killed = await _kill_pubsub_connections(admin)
            assert int(killed) >= 1
            await client.send_event(handle.workflow_id, "go")  # its signal is published during the gap
            await within(5, collect(stream, received, count=n + 1))
            # The kill did cut our subscription, and it came back (the signal may be read before the new
            # connection is counted: a look again that was queued before the kill finds it in the log).
            await eventually(lambda n=n: len(connections) >= n + 1, timeout=5)
            assert len(connections) == n + 1
        await within(10, collect(stream, received))  # ends when the workflow finishes
    assert await client.result(handle.workflow_id, timeout=5) == rounds + 1
    assert [s.payload["n"] for s in received] == list(range(rounds + 1))
    assert len({s.seq for s in received}) == rounds + 1


async def _kill_pubsub_connections(admin: Client) -> int:
    """CLIENT KILL TYPE pubsub on every node (one on a single Redis, each primary on a cluster)."""
    redis: Any = admin.store.redis
    if admin.store.cluster:
        replies = await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub", target_nodes=redis.get_primaries())
        return sum(int(count) for count in replies.values())
    return int(await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
