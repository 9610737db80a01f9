"""Install the scripts' Function library on the server, or say why the scripts must travel with EVALSHA.

The library's name carries the hash of its code (see :mod:`bdurable.lua`), so a library of that name that holds
other code is someone else's: it is never called, and never replaced (``FUNCTION LOAD`` without ``REPLACE``, so a
process cannot overwrite code that other processes run). Every primary of a cluster gets its own copy: a
function runs on the node of its keys' slot.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from bdurable.lua import Library

__all__ = ["install_library", "is_lost_code"]


async def install_library(redis: Redis | RedisCluster, library: Library) -> str | None:
    """Make sure every primary holds ``library``: ``None`` when its functions can be called, else the reason
    they cannot (no permission to load functions, a server without functions, a foreign library of that name).
    Connection errors propagate: the caller retries through outages as for any command."""
    nodes: list[ClusterNode | None] = list(redis.get_primaries()) if isinstance(redis, RedisCluster) else [None]
    try:
        for node in nodes:
            code = await _library_code(redis, node, library.name)
            if code is None:
                try:
                    await redis.execute_command("FUNCTION LOAD", library.source, **_on(node))
                except ResponseError as exc:
                    if "already exists" not in str(exc):  # another process loaded it meanwhile: fine
                        raise
                code = await _library_code(redis, node, library.name)
            if code != library.source:
                return f"a library named {library.name} with other code is loaded on the server"
    except ResponseError as exc:  # NOPERM (an ACL user without FUNCTION), a server older than Redis 7, ...
        return str(exc)
    return None


def is_lost_code(result: object) -> bool:
    """Whether a script call failed because the server lost our code (a restart without persistence, a
    failover to an empty node, a flush): ``NOSCRIPT`` for EVALSHA, "Function not found" for FCALL."""
    if isinstance(result, NoScriptError):
        return True
    return isinstance(result, ResponseError) and "Function not found" in str(result)


async def _library_code(redis: Redis | RedisCluster, node: ClusterNode | None, name: str) -> str | None:
    listed = await redis.execute_command("FUNCTION LIST", "LIBRARYNAME", name, "WITHCODE", **_on(node))
    if node is not None and isinstance(listed, dict) and set(listed) == {node.name}:  # a reply keyed by node
        listed = listed[node.name]
    for entry in listed or []:
        fields = dict(zip(entry[::2], entry[1::2], strict=True)) if isinstance(entry, list) else dict(entry)
        if fields.get("library_name") == name:
            return str(fields.get("library_code"))
    return None


def _on(node: ClusterNode | None) -> dict[str, Any]:
    """The arguments that send a command to one primary of a cluster (none for a single server)."""
    return {} if node is None else {"target_nodes": node}
