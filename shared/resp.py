"""Packing commands into the Redis protocol with hiredis in one call.

redis-py's own packer runs a Python pass over every argument before handing them to hiredis (about 10 us for
a script call of fifteen arguments, most of a dispatcher's cost in redis-py); hiredis packs str, int, float
and bytes itself, the same bytes, in about 1 us. The connection classes below use it for every command whose
arguments it takes, and fall back to redis-py's packer for the rest (a multi-word command name such as
``CONFIG GET``, a bool that redis-py refuses with its own error, text that is not valid UTF-8). A single
Redis only: redis-py's cluster client makes its own connections and keeps its packer.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection

__all__ = ["connection_class"]


def _packed(args: tuple[Any, ...]) -> list[bytes] | None:
    name = args[0]
    if not isinstance(name, str) or " " in name:
        return None
    try:
        return [hiredis.pack_command(args)]
    except (TypeError, ValueError):  # a type hiredis does not take, or text that cannot be encoded
        return None


class HiredisConnection(Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return _packed(args) or super().pack_command(*args)


class HiredisSSLConnection(SSLConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return _packed(args) or super().pack_command(*args)


class HiredisUnixConnection(UnixDomainSocketConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return _packed(args) or super().pack_command(*args)


def connection_class(url: str) -> type[AbstractConnection]:
    """The connection class for a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    scheme = url.partition("://")[0]
    if scheme == "rediss":
        return HiredisSSLConnection
    if scheme == "unix":
        return HiredisUnixConnection
    return HiredisConnection
