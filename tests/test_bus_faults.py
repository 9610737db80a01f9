"""The signal bus as real processes: SIGKILLed with events in flight, restarted, and two buses at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from contextlib import suppress
from typing import Any

import bus_app
from support import InProcessRoles, RoleProcesses, eventually

from bdurable import Client, Status


async def bus_started(
    client: Client, processes: RoleProcesses, count: int = 1, **env: str
) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` signal-bus processes and wait until each has leased itself on the shard."""
    redis = client.store.redis
    alive = client.keys.shard(0).bus_alive
    before = set(await redis.zrange(alive, 0, -1))
    started = [processes.start("signal-bus", **env) for _ in range(count)]

    async def up() -> bool:
        for process in started:
            assert process.poll() is None, processes.log_of(process)
        return len(set(await redis.zrange(alive, 0, -1)) - before) >= count

    await eventually(up, timeout=15)
    return started


def kill(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    os.killpg(process.pid, sig)
    if sig == signal.SIGKILL:
        process.wait(timeout=10)


async def all_waiting(client: Client, ids: list[str]) -> bool:
    for workflow_id in ids:
        state = await client.get_state(workflow_id)
        if state is None or state.status != Status.AWAITING_EVENT:
            return False
    return True


async def buffered(client: Client, workflow_id: str) -> list[str]:
    shard = client.keys.for_workflow(workflow_id)
    return await client.store.redis.lrange(shard.events(workflow_id), 0, -1)  # type: ignore[no-any-return]


def connection_ports(pid: int) -> set[int]:
    """Local TCP ports of a process's sockets (Linux /proc): they identify its Redis connections."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def freeze_while_waiting(client: Client, bus: subprocess.Popen[bytes]) -> None:
    """SIGSTOP the bus while it is blocked waiting for messages. Whatever Redis hands a frozen bus (the
    current bus blocks in BLMOVE, which moves the next message into its own list) is taken but not
    applied, as in a GC pause or a crash right after the pop."""
    for _ in range(100):
        kill(bus, signal.SIGSTOP)
        ports = connection_ports(bus.pid)
        clients: list[dict[str, Any]] = await client.store.redis.client_list()
        if any(int(c["addr"].rsplit(":", 1)[1]) in ports and "b" in c.get("flags", "") for c in clients):
            return
        kill(bus, signal.SIGCONT)
        await asyncio.sleep(0.03)
    raise AssertionError("the bus never blocked waiting for messages")


async def in_flight(client: Client) -> list[str]:
    """Messages in buses' own lists (taken from the bus list, not applied yet)."""
    redis = client.store.redis
    keys = [k async for k in redis.scan_iter(match=client.keys.shard(0).pattern("bus_forward"))]
    return [m for k in keys for m in await redis.lrange(k, 0, -1)]


async def test_a_bus_killed_with_events_in_flight_loses_nothing_and_applies_nothing_twice(
    client: Client, roles: InProcessRoles, processes: RoleProcesses
) -> None:
    roles.dispatcher(bus_app, concurrency=100)
    workflows, events = 20, 10
    handles = [await client.start(bus_app.wait_events, {"name": "go", "count": events}) for _ in range(workflows)]
    ids = [h.workflow_id for h in handles]
    await eventually(lambda: all_waiting(client, ids), timeout=10)

    bus = (await bus_started(client, processes))[0]
    # A message popped by the bus but not yet applied when it dies (the bus is frozen in BLMOVE).
    await freeze_while_waiting(client, bus)
    for workflow_id in ids:
        await client.send_event(workflow_id, "go", 0)
    await asyncio.sleep(0.1)
    print("in flight when the bus was killed:", await in_flight(client))
    kill(bus)

    # More events while no bus runs, then through restarts, with kills in the middle of the stream.
    async def send(n: int) -> None:
        await asyncio.gather(*(client.send_event(workflow_id, "go", n) for workflow_id in ids))

    await send(1)
    for n in range(2, events):
        if n in (2, 5, 8):
            bus = (await bus_started(client, processes))[0]
        await send(n)
        if n in (4, 7):
            await asyncio.sleep(0.02)
            kill(bus)

    for workflow_id in ids:
        out = await client.result(workflow_id, timeout=15)
        assert sorted(out) == list(range(events)), out  # nothing lost, nothing twice
        assert await buffered(client, workflow_id) == []
        state = await client.get_state(workflow_id)
        assert state is not None
        assert state.step == events
    assert await in_flight(client) == []
    assert await client.store.redis.llen(client.keys.shard(0).bus) == 0


async def test_events_to_one_workflow_keep_their_order_across_a_bus_crash(
    client: Client, roles: InProcessRoles, processes: RoleProcesses
) -> None:
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.wait_events, {"name": "go", "count": 3})
    await eventually(lambda: all_waiting(client, [handle.workflow_id]), timeout=10)
    # The bus's lease is its heartbeat timeout (10 s by default; 5 s here): a replacement that starts
    # sooner must still apply the dead bus's in-flight message before anything sent after it.
    bus = (await bus_started(client, processes, BDURABLE_HEARTBEAT_TIMEOUT="5s"))[0]
    await freeze_while_waiting(client, bus)
    await client.send_event(handle.workflow_id, "go", "first")  # taken by the frozen bus, not applied
    await asyncio.sleep(0.1)
    kill(bus)
    await bus_started(client, processes)
    await client.send_event(handle.workflow_id, "go", "second")
    await client.send_event(handle.workflow_id, "go", "third")
    assert await client.result(handle.workflow_id, timeout=15) == ["first", "second", "third"]


async def test_two_buses_at_once_deliver_each_event_exactly_once(
    client: Client, roles: InProcessRoles, processes: RoleProcesses
) -> None:
    roles.dispatcher(bus_app, concurrency=200)
    count = 100
    handles = await asyncio.gather(*(client.start(bus_app.wait_events, {"name": "go"}) for _ in range(count)))
    ids = [h.workflow_id for h in handles]
    await eventually(lambda: all_waiting(client, ids), timeout=10)
    buses = await bus_started(client, processes, count=2)
    await asyncio.gather(*(client.send_event(workflow_id, "go", i) for i, workflow_id in enumerate(ids)))
    results = await asyncio.gather(*(client.result(workflow_id, timeout=15) for workflow_id in ids))
    assert results == [[i] for i in range(count)]
    for workflow_id in ids:
        assert await buffered(client, workflow_id) == []  # a second delivery would have been buffered
    for bus in buses:
        assert bus.poll() is None


async def test_two_buses_at_once_keep_the_order_of_events_to_one_workflow(
    client: Client, roles: InProcessRoles, processes: RoleProcesses
) -> None:
    """Bus A pops the first event and is paused before applying it (a GC pause, a starved CPU: SIGSTOP
    here, well within its lease); meanwhile bus B receives the second event. The workflow must still see
    them in the order they were sent."""
    roles.dispatcher(bus_app)
    handle = await client.start(bus_app.wait_events, {"name": "go", "count": 2})
    await eventually(lambda: all_waiting(client, [handle.workflow_id]), timeout=10)
    bus_a = (await bus_started(client, processes, BDURABLE_HEARTBEAT_TIMEOUT="10s"))[0]
    await freeze_while_waiting(client, bus_a)
    await client.send_event(handle.workflow_id, "go", "first")  # taken by A, not applied yet
    await asyncio.sleep(0.1)
    await bus_started(client, processes)
    await client.send_event(handle.workflow_id, "go", "second")
    await asyncio.sleep(0.5)  # B has applied "second" by now
    kill(bus_a, signal.SIGCONT)
    assert await client.result(handle.workflow_id, timeout=10) == ["first", "second"]
