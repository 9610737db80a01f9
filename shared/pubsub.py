"""One shared pub/sub connection multiplexed over many waiters, which never lets a waiter miss a finish.

Pub/sub is at most once, so messages are only hints: a waiter re-reads the durable state when told to
"look again" (``None``). Three guards make sure it always is, whatever is lost:

1. A subscription is confirmed before :meth:`Subscriptions.follow` returns, so a state read after it can never
   be served before the subscription took effect (a finish published in between would otherwise be lost:
   redis-py sends ``SUBSCRIBE`` without waiting for its reply, on another connection than the read).
2. The shared reader is restarted on any failure (a lost connection, an error, being cancelled), and after
   each re-subscription is confirmed, every waiter of that channel is told to look again.
3. Every waiter looks again on a slow timer anyway (``recheck_every``): no waiter depends on one message.

Only the reader ever reads from the connection. ``SUBSCRIBE``/``UNSUBSCRIBE`` from followers only write, as
long as the connection is subscribed to something (redis-py health-checks an unsubscribed connection with a
``PING`` whose reply it reads, which would race the reader): the connection therefore always keeps one
subscription, to a channel nobody publishes on (``keepalive``). Many concurrent ``result()`` calls share one
connection instead of exhausting the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog

from bdurable.codec import loads

__all__ = ["Subscriptions", "Waiter"]

log = structlog.get_logger("bdurable.pubsub")

Message = dict[str, Any] | None
CONFIRM_TIMEOUT = 5.0  # after this, a waiter goes on unconfirmed and relies on its slow re-check


class Waiter:
    """What one follower receives: decoded messages, or ``None`` meaning "you may have missed something"."""

    def __init__(self, recheck_every: float) -> None:
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self.recheck_every = recheck_every

    def put(self, message: Message) -> None:
        self._queue.put_nowait(message)

    async def next(self) -> Message:
        """The next message, or ``None`` to look again (at the latest after ``recheck_every`` seconds)."""
        try:
            async with asyncio.timeout(self.recheck_every):
                return await self._queue.get()
        except TimeoutError:
            return None


@dataclass
class _Channel:
    waiters: set[Waiter] = field(default_factory=set)
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    confirmations: int = 0  # subscriptions the server confirmed (another one means: re-subscribed)


class Subscriptions:
    def __init__(self, redis: aioredis.Redis, keepalive: str, *, recheck_every: float = 5.0) -> None:
        self._redis = redis
        self.keepalive = keepalive
        self.recheck_every = recheck_every
        self._pubsub: Any = None
        self._channels: dict[str, _Channel] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closing = False
        self.restarts = 0  # how many times the reader was restarted (tests and logs)

    @asynccontextmanager
    async def follow(self, channel: str) -> AsyncIterator[Waiter]:
        """Subscribe to ``channel``; returns once Redis confirmed the subscription (or after a timeout, then
        the waiter's slow re-check covers the gap). The waiter yields decoded messages, or ``None``."""
        waiter = Waiter(self.recheck_every)
        async with self._lock:
            entry = self._channels.get(channel)
            if entry is None:
                entry = self._channels[channel] = _Channel()
                try:
                    if self._pubsub is None:
                        self._pubsub = await self._connect(channel)  # nobody reads it yet
                    else:
                        await self._pubsub.subscribe(channel)  # a write only: the connection is subscribed
                except Exception:
                    del self._channels[channel]  # Redis is unreachable now: fail fast, like a read would
                    raise
            entry.waiters.add(waiter)
            self._ensure_reader()
        try:
            with suppress(TimeoutError):
                async with asyncio.timeout(CONFIRM_TIMEOUT):
                    await entry.confirmed.wait()
            yield waiter
        finally:
            await self._leave(channel, waiter)

    async def _connect(self, *channels: str) -> Any:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self.keepalive, *channels)
        except BaseException:
            with suppress(Exception):
                await pubsub.aclose()
            raise
        return pubsub

    async def _leave(self, channel: str, waiter: Waiter) -> None:
        async with self._lock:
            entry = self._channels.get(channel)
            if entry is None:
                return
            entry.waiters.discard(waiter)
            if not entry.waiters:
                del self._channels[channel]
                if self._pubsub is not None:
                    with suppress(Exception):
                        await self._pubsub.unsubscribe(channel)

    def _ensure_reader(self, *, reconnect: bool = False) -> None:
        if self._closing or (self._reader is not None and not self._reader.done()):
            return
        self._reader = asyncio.get_running_loop().create_task(self._read(reconnect))
        self._reader.add_done_callback(self._reader_ended)

    def _reader_ended(self, task: asyncio.Task[None]) -> None:
        """Whatever ended the reader (an error, a cancellation), start another while anyone waits: it begins by
        reconnecting, and everyone looks again once re-subscribed."""
        if task is not self._reader or self._closing or not self._channels:
            return  # a newer reader took over already, or nobody waits
        if not task.cancelled() and task.exception() is not None:
            log.warning("pub/sub reader failed; restarting it", error=repr(task.exception()))
        self.restarts += 1
        with suppress(RuntimeError):  # the loop is closing
            self._ensure_reader(reconnect=True)

    async def _read(self, reconnect: bool) -> None:
        if reconnect:
            await self._reconnect()
        pause = 0.0
        while self._channels:
            async with self._lock:  # never read a connection that is still being set up
                pubsub = self._pubsub
            try:
                if pubsub is None:
                    raise ConnectionError("no pub/sub connection")
                message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                pause = 0.0
            except Exception as exc:  # any failure: reconnect, re-subscribe, have everyone look again
                log.debug("pub/sub connection lost; reconnecting", error=repr(exc))
                await asyncio.sleep(pause)  # a failure that repeats at once never spins the loop
                pause = min(max(pause * 2, 0.05), 1.0)
                await self._reconnect()
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        entry = self._channels.get(str(channel)) if channel is not None else None
        if entry is None:
            return
        kind = message.get("type")
        if kind == "subscribe":
            entry.confirmations += 1
            entry.confirmed.set()
            if entry.confirmations > 1:  # a re-subscription: anything may have happened meanwhile
                for waiter in list(entry.waiters):
                    waiter.put(None)
        elif kind == "message":
            try:
                payload = loads(message["data"])
            except ValueError:
                payload = None
            for waiter in list(entry.waiters):
                waiter.put(payload if isinstance(payload, dict) else None)

    async def _reconnect(self) -> None:
        """Re-subscribe every followed channel on a fresh connection, with backoff while Redis is away.

        Each channel counts as unconfirmed again; its waiters are told to look again when the server confirms
        the new subscription (see ``_dispatch``), so a read can never precede the subscription it relies on.
        """
        delay = 0.1
        while self._channels and not self._closing:
            async with self._lock:
                old, self._pubsub = self._pubsub, None
                if old is not None:
                    with suppress(Exception):
                        await old.aclose()
                for entry in self._channels.values():
                    entry.confirmed.clear()
                    entry.confirmations = max(entry.confirmations, 1)  # the next confirmation means "look again"
                try:
                    self._pubsub = await self._connect(*self._channels)
                    return
                except Exception as exc:  # Redis still away: wait and try again
                    log.debug("pub/sub re-subscribe failed", error=repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with suppress(Exception):
                await self._pubsub.aclose()
        self._channels.clear()
