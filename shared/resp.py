"""The engine's Redis connections: commands packed by hiredis in one call, and writes that can be cancelled.

These classes serve a single Redis and, through ``engine_cluster_connections``, every node of a cluster.

**Packing.** redis-py's own packer runs a Python pass over every argument before handing them to hiredis
(about 10 us for a script call of fifteen arguments, most of a dispatcher's cost in redis-py); hiredis packs
str, int, float and bytes itself, the same bytes, in about 1 us. The classes below use it for every command
whose arguments it takes, and fall back to redis-py's packer for the rest (a multi-word command name such as
``CONFIG GET``, a bool that redis-py refuses with its own error, text that is not valid UTF-8).

**Cancelling a write.** redis-py bounds each write with ``asyncio.wait_for(..., socket_timeout)``, and on Python
3.11 ``wait_for`` loses a cancellation that arrives as the write it wraps completes: the task goes on as if never
cancelled. A write completes almost at once, so about one cancellation in ten that lands on a command was lost
(measured), and whatever cancelled it waited on: a ``result()`` past its timeout, a loop that never stopped.
On 3.11 these classes bound the write with ``asyncio.timeout`` instead, which never loses one (3.12 rebuilt
``wait_for`` on it). The same rule holds for the engine's own code: ruff bans ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from typing import Any

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["connection_class", "engine_cluster_connections"]


def _packed(args: tuple[Any, ...]) -> list[bytes] | None:
    name = args[0]
    if not isinstance(name, str) or " " in name:
        return None
    try:
        return [hiredis.pack_command(args)]
    except (TypeError, ValueError):  # a type hiredis does not take, or text that cannot be encoded
        return None


WAIT_FOR_LOSES_CANCELS = sys.version_info < (3, 12)


class _EngineConnection(AbstractConnection):
    """What the engine changes in each of its connection classes (see the module's docstring)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return _packed(args) or super().pack_command(*args)

    async def send_packed_command(self, command: bytes | str | Iterable[bytes], check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if not (timeout and WAIT_FOR_LOSES_CANCELS):
            return await super().send_packed_command(command, check_health)
        # Without a socket timeout redis-py writes without wait_for; the same bound comes from asyncio.timeout.
        # The change lasts for the write only. A connection has one user at a time, but for a pub/sub one, whose
        # reader may read meanwhile: it passes its own timeout to every read, so it never sees the change.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)
        except TimeoutError:  # redis-py dropped the connection as the write was cancelled
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout
        return None


class HiredisConnection(_EngineConnection, Connection):
    pass


class HiredisSSLConnection(_EngineConnection, SSLConnection):
    pass


class HiredisUnixConnection(_EngineConnection, UnixDomainSocketConnection):
    pass


def connection_class(url: str) -> type[AbstractConnection]:
    """The connection class for a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    scheme = url.partition("://")[0]
    if scheme == "rediss":
        return HiredisSSLConnection
    if scheme == "unix":
        return HiredisUnixConnection
    return HiredisConnection


def engine_cluster_connections(cluster: RedisCluster) -> RedisCluster:
    """Give a new cluster client's nodes the engine's connection classes.

    redis-py's cluster client takes no connection class: it writes ``Connection`` (or ``SSLConnection``) into
    the keyword arguments every node is made from, and has made the nodes it was given before this runs. Both
    are replaced here, before any node has opened a connection (``tests/test_resp.py`` checks the classes a
    cluster's connections end up with, so a redis-py that moves them shows at once).
    """
    tls = cluster.connection_kwargs.get("connection_class") is SSLConnection
    engine_class = HiredisSSLConnection if tls else HiredisConnection
    cluster.connection_kwargs["connection_class"] = engine_class
    for node in cluster.startup_nodes:
        node.connection_class = engine_class
    return cluster
