"""The engine's connection classes (``bdurable.resp``): commands packed by hiredis in one call (the same bytes
as redis-py's own packer, its errors kept, every kind of URL served: TCP here and in the whole suite, TLS in
test_security, a Unix socket below), and a task cancelled while it sends a command always stops, on a single
Redis and on a cluster (this file runs in the cluster leg too)."""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path
from typing import Any

import engine_app
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError
from support import InProcessRoles, within

from bdurable import Client, Settings
from bdurable.embedded import RedisServer
from bdurable.resp import HiredisConnection, HiredisSSLConnection, HiredisUnixConnection, connection_class
from bdurable.store import connect_redis

ARGUMENTS: list[tuple[Any, ...]] = [
    ("FCALL", "bdurable_commit_task", 1, "{t}", "{f}", "worker-1", "w|abc", 12, "ok", '{"a":[1,2.5]}', 0, ""),
    ("SET", "k", "é ☃ 𝄞", "PX", 10_000),  # text beyond ASCII
    ("ZADD", "z", 0.1, "a", 1e300, "b", -3, "c", 10**20, "d"),  # floats and ints as redis-py writes them
    ("SET", "bytes", b"\x00\xff raw", "XX"),
    ("CONFIG GET", "maxmemory"),  # a multi-word name: redis-py splits it
    ("SET", "lone", "\ud800"),  # not valid UTF-8: redis-py's encoding_errors="replace" applies
    ("SET", "big", "x" * 100_000),  # large values: redis-py sends them in pieces, the bytes are the same
]
CLASSES = [(HiredisConnection, Connection), (HiredisSSLConnection, SSLConnection),
           (HiredisUnixConnection, UnixDomainSocketConnection)]  # fmt: skip


@pytest.mark.parametrize(("fast", "plain"), CLASSES)
def test_commands_are_packed_to_the_same_bytes_as_redis_py_packs_them(fast: Any, plain: Any) -> None:
    ours, theirs = fast(encoding_errors="replace"), plain(encoding_errors="replace")
    for args in ARGUMENTS:
        assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args)), args[:2]
    commands = [("SET", "a", 1), ("GET", "a"), ("CLIENT LIST",)]
    assert b"".join(ours.pack_commands(commands)) == b"".join(theirs.pack_commands(commands))
    with pytest.raises(DataError, match="bool"):  # redis-py's own refusal, not a different error
        ours.pack_command("SET", "flag", True)


def test_each_url_scheme_gets_its_connection_class() -> None:
    assert connection_class("redis://127.0.0.1:6379/0") is HiredisConnection
    assert connection_class("rediss://127.0.0.1:6380/0") is HiredisSSLConnection
    assert connection_class("unix:///run/redis.sock") is HiredisUnixConnection


async def test_a_cluster_client_makes_its_nodes_with_the_engines_classes() -> None:
    for url, expected in (("redis+cluster://127.0.0.1:7000", HiredisConnection),
                          ("rediss+cluster://127.0.0.1:7000", HiredisSSLConnection)):  # fmt: skip
        cluster = connect_redis(url)  # nothing is connected before the first command
        assert isinstance(cluster, RedisCluster)
        assert cluster.connection_kwargs["connection_class"] is expected, url  # for the nodes it will find
        assert {node.connection_class for node in cluster.startup_nodes} == {expected}, url  # and the one given
        await cluster.aclose()


async def test_values_round_trip_through_redis(redis_server: RedisServer) -> None:
    redis = connect_redis(redis_server.url)
    try:
        await redis.set("resp:text", "é ☃ 𝄞")
        await redis.zadd("resp:z", {"a": 0.1, "b": 1e300})
        assert await redis.get("resp:text") == "é ☃ 𝄞"
        assert await redis.zscore("resp:z", "a") == 0.1
        assert await redis.zscore("resp:z", "b") == 1e300
        assert (await redis.config_get("maxmemory-policy"))["maxmemory-policy"] == "noeviction"
    finally:
        await redis.delete("resp:text", "resp:z")
        await redis.aclose()


async def test_a_workflow_runs_over_a_unix_socket() -> None:
    with tempfile.TemporaryDirectory(prefix="bdurable-sock-") as directory:
        socket_path = Path(directory) / "redis.sock"
        with RedisServer(extra=["--unixsocket", str(socket_path), "--unixsocketperm", "700"]):
            settings = Settings(redis_url=f"unix://{socket_path}", prefix="unix", heartbeat_interval=0.2)
            roles = InProcessRoles(settings)
            try:
                roles.dispatcher(engine_app)
                async with Client(settings=settings) as client:
                    handle = await client.start(engine_app.quick, {"over": "a socket"})
                    assert await within(30, handle.result()) == {"over": "a socket"}
            finally:
                await roles.stop_all()


async def test_a_task_cancelled_while_it_sends_a_command_stops(client: Client) -> None:
    """Python 3.11's ``asyncio.wait_for``, which redis-py puts around every write, lost about one such cancel in
    ten: the task went on sending as if never cancelled, and whoever cancelled it waited for ever."""
    redis = client.store.redis

    async def sending() -> None:
        while True:
            await redis.get("resp:cancel")

    for attempt in range(300):
        task = asyncio.create_task(sending())
        await asyncio.sleep(random.uniform(0.0002, 0.003))  # lands on a write, a read or between commands
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2.0)
        if not done:  # the cancel was lost
            while not task.done():  # stop it for good: cancels that land between two commands are kept
                task.cancel()
                await asyncio.sleep(0.001)
            pytest.fail(f"a cancelled task went on sending (after {attempt} that stopped)")
    assert await redis.ping()  # the connections cut by the cancels are replaced


async def test_every_connection_of_the_engine_is_of_its_classes(client: Client) -> None:
    redis = client.store.redis
    await redis.get("resp:class")
    if isinstance(redis, RedisCluster):
        classes = {type(connection) for node in redis.get_nodes() for connection in node._connections}
    else:
        classes = {type(connection) for connection in redis.connection_pool._available_connections}
    assert classes, "no connection was opened"
    assert classes <= {HiredisConnection, HiredisSSLConnection}, classes
