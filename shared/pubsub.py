"""One shared pub/sub connection multiplexed over many waiters.

Pub/sub is at most once, so messages are only hints: a waiter re-reads the durable state after every
message, and after every reconnection it receives ``None`` (meaning "you may have missed something; look
again"). Many concurrent ``result()`` calls share one connection instead of exhausting the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bdurable.codec import loads

__all__ = ["Subscriptions"]

Message = dict[str, Any] | None


class Subscriptions:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pubsub: Any = None
        self._queues: dict[str, set[asyncio.Queue[Message]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._active = asyncio.Event()  # set while anyone follows a channel

    @asynccontextmanager
    async def follow(self, channel: str) -> AsyncIterator[asyncio.Queue[Message]]:
        """Subscribe to a channel; the queue yields decoded messages, or ``None`` after a reconnect."""
        queue: asyncio.Queue[Message] = asyncio.Queue()
        async with self._lock:
            first = channel not in self._queues
            self._queues.setdefault(channel, set()).add(queue)
            if self._pubsub is None:
                self._pubsub = self._redis.pubsub()
            if first:
                await self._pubsub.subscribe(channel)
            self._active.set()
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read())
        try:
            yield queue
        finally:
            async with self._lock:
                waiters = self._queues.get(channel)
                if waiters is not None:
                    waiters.discard(queue)
                    if not waiters:
                        del self._queues[channel]
                        if not self._queues:
                            self._active.clear()
                        with suppress(Exception):
                            await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        while True:
            if not self._queues:
                await self._active.wait()
                continue
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await self._reconnect()
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                payload = loads(message["data"])
            except ValueError:
                payload = None
            for queue in list(self._queues.get(message["channel"], ())):
                queue.put_nowait(payload if isinstance(payload, dict) else None)

    async def _reconnect(self) -> None:
        """Re-subscribe with backoff and tell every waiter to re-read what it waits for."""
        delay = 0.1
        while self._queues:
            await asyncio.sleep(delay)
            try:
                async with self._lock:
                    with suppress(Exception):
                        await self._pubsub.aclose()
                    self._pubsub = self._redis.pubsub()
                    if self._queues:
                        await self._pubsub.subscribe(*self._queues)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                delay = min(delay * 2, 2.0)
                continue
            for waiters in self._queues.values():
                for queue in waiters:
                    queue.put_nowait(None)
            return

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with suppress(Exception):
                await self._pubsub.aclose()
        self._queues.clear()
