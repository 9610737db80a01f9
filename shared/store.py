"""The only module that talks to Redis.

Every state transition is one Lua script (see :mod:`bdurable.lua`); reads are plain commands. Script calls
made in the same event-loop tick by concurrent coroutines are sent together in one pipeline
(auto-pipelining): a dispatcher committing fifty steps pays one round trip, not fifty.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from bdurable.config import Settings
from bdurable.keys import Keys, ShardKeys
from bdurable.lua import Script, load_scripts

__all__ = ["ReplicationError", "ScriptCall", "Store", "connect_redis"]

Arg = str | int | float
WAIT_TIMEOUT_MS = 2_000  # below the connections' read timeout, so a short-handed WAIT is reported as such


class ReplicationError(ConnectionError):
    """A write was applied but fewer replicas than ``BDURABLE_WAIT_REPLICAS`` confirmed it in time.

    A ``ConnectionError``: callers treat it like an outage and retry; every b-durable write is idempotent.
    """


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def connect_redis(url: str, **options: Any) -> aioredis.Redis:
    """A redis-py asyncio client for a ``redis://``/``rediss://``/``unix://`` URL.

    User, password (ACL) and TLS come from the URL. Responses are decoded as UTF-8 text. The pool blocks
    (up to 30 s) for a free connection instead of failing when many coroutines use Redis at once.
    ``redis+cluster://host:port`` (or ``rediss+cluster://``) selects redis-py's cluster client, which finds
    the other nodes from the one given; the typed interface is the same.
    """
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        return RedisCluster.from_url(  # type: ignore[return-value]  # the same command interface as Redis
            f"{CLUSTER_SCHEMES[scheme]}://{rest}",
            decode_responses=True,
            encoding_errors="replace",  # bytes that are not UTF-8 become U+FFFD: data errors, never crashes
            socket_connect_timeout=5,
            socket_keepalive=True,
            max_connections=options.pop("max_connections", 1024),  # per node: script batches go out concurrently
            **options,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=options.pop("max_connections", 128),
        timeout=30,
        decode_responses=True,
        encoding_errors="replace",  # bytes that are not UTF-8 become U+FFFD: data errors, never crashes
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
        **options,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it


@dataclass(slots=True)
class ScriptCall:
    """One pending script call of an auto-pipelined batch."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Arg]
    future: asyncio.Future[Any] = field(repr=False)


class Store:
    """Typed access to b-durable's Redis state for one prefix."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.shards)
        self.cluster = is_cluster_url(settings.redis_url)
        self._scripts = load_scripts()
        self._pending: list[ScriptCall] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(connect_redis(settings.redis_url), settings)

    async def initialize(self) -> None:
        """Load the cluster's slot map before first use (pub/sub needs it); a no-op on a single Redis."""
        if self.cluster:
            await self.redis.initialize()

    async def check_shards(self) -> None:
        """Refuse to run with a shard count other than the one this prefix was created with.

        The first process to connect records ``BDURABLE_SHARDS``; a different count would look for
        workflows in the wrong shards, so every later process must agree.
        """
        key = f"{self.global_tag}:shards"
        await self.redis.set(key, self.settings.shards, nx=True)
        recorded: str | None = await self.redis.get(key)  # type: ignore[assignment]
        if recorded is not None and int(recorded) != self.settings.shards:
            raise ValueError(
                f"BDURABLE_SHARDS is {self.settings.shards} but prefix {self.settings.prefix!r} was created with "
                f"{recorded} shards: every process of one prefix must use the same count"
            )

    async def close(self) -> None:
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await self.redis.aclose()

    # -- scripts ---------------------------------------------------------------------------------------

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Call a script; concurrent calls in one loop tick share one pipelined round trip."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(ScriptCall(self._scripts[name], keys, args, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        batch, self._pending, self._flush_scheduled = self._pending, [], False
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[ScriptCall]) -> None:
        try:
            results = await self._send(batch)
        except BaseException as exc:  # connection trouble: every caller sees it and decides
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for call, result in zip(batch, results, strict=True):
            if call.future.done():
                continue
            if isinstance(result, Exception):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)

    async def _send(self, batch: list[ScriptCall]) -> list[Any]:
        if self.cluster:
            # redis-py's cluster pipeline refuses EVALSHA: send the batch concurrently (one call per node
            # connection) instead; each call finds its slot's node itself.
            calls = (self._evalsha_reloading(call) for call in batch)
            return list(await asyncio.gather(*calls, return_exceptions=True))
        if len(batch) == 1 and self.settings.wait_replicas == 0:
            call = batch[0]
            try:
                return [await self._evalsha(call)]
            except NoScriptError:
                await self.redis.script_load(call.script.source)
                return [await self._evalsha(call)]
            except ResponseError as exc:
                return [exc]
        results = await self._pipeline(batch)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:  # Redis restarted or failed over: reload every script, then retry those calls
            for script in {batch[i].script for i in missing}:
                await self.redis.script_load(script.source)
            retried = await self._pipeline([batch[i] for i in missing])
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        return results

    async def _evalsha_reloading(self, call: ScriptCall) -> Any:
        try:
            return await self._evalsha(call)
        except NoScriptError:
            await self.redis.script_load(call.script.source)
            return await self._evalsha(call)

    async def _evalsha(self, call: ScriptCall) -> Any:
        return await self.redis.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)

    async def _pipeline(self, batch: list[ScriptCall]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for call in batch:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        replicas = self.settings.wait_replicas
        if replicas > 0:
            # WAIT covers the writes of its own connection: sent in the same pipeline, it holds the
            # acknowledgement of these commits until `replicas` replicas have them.
            pipe.execute_command("WAIT", replicas, WAIT_TIMEOUT_MS)
        results = list(await pipe.execute(raise_on_error=False))
        if replicas > 0:
            acknowledged = results.pop()
            if isinstance(acknowledged, int) and acknowledged < replicas:
                raise ReplicationError(
                    f"only {acknowledged} of {replicas} replicas acknowledged the write within "
                    f"{WAIT_TIMEOUT_MS} ms (BDURABLE_WAIT_REPLICAS)"
                )
        return results

    async def shard_script(self, name: str, shard: ShardKeys, *args: Arg) -> Any:
        """Call a per-shard script: KEYS[1] is the shard tag, ARGV[1] the fleet tag."""
        return await self.script(name, [shard.tag], [self.global_tag, *args])

    async def fleet_script(self, name: str, *args: Arg) -> Any:
        """Call a fleet-wide script (keys under the prefix's own tag)."""
        return await self.script(name, [self.global_tag], [self.global_tag, *args])

    @property
    def global_tag(self) -> str:
        return f"{{{self.settings.prefix}}}"
