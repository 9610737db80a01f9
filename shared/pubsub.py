"""One shared pub/sub connection multiplexed over many waiters, which never lets a waiter miss a finish.

Pub/sub is at most once, so messages are only hints: a waiter re-reads the durable state when told to
"look again" (``None``). Three guards make sure it always is, whatever is lost:

1. A subscription is confirmed before :meth:`Subscriptions.follow` returns, so a state read after it can never
   be served before the subscription took effect (a finish published in between would otherwise be lost:
   redis-py sends ``SUBSCRIBE`` without waiting for its reply, on another connection than the read).
2. The shared reader is restarted on any failure (a lost connection, an error, being cancelled), and after
   each re-subscription is confirmed, every waiter of that channel is told to look again.
3. Every waiter looks again on a slow timer anyway (``recheck_every``): no waiter depends on one message.

Waiters never wait for each other's Redis I/O. Following and leaving a channel only change the set of channels
wanted, at once and without awaiting anything; one writer task brings the connection's subscriptions in line,
many channels per ``SUBSCRIBE``/``UNSUBSCRIBE``. (Writing under a lock that every waiter took, to follow and
to leave, let one slow write hold up a hundred thousand ``result()`` calls that had their answer: a Redis
restart under load made them time out.) Only the reader reads from the connection, and only the reader
and the writer replace it. The connection always keeps one subscription, to a channel nobody publishes on
(``keepalive``): redis-py health-checks an unsubscribed connection with a ``PING`` whose reply it reads, which
would race the reader. Many concurrent ``result()`` calls share one connection instead of exhausting the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import structlog

from bdurable.codec import loads

__all__ = ["Subscriptions", "Waiter"]

log = structlog.get_logger("bdurable.pubsub")

Message = dict[str, Any] | None
CONFIRM_TIMEOUT = 5.0  # after this, a waiter goes on unconfirmed and relies on its slow re-check
CHANNELS_PER_COMMAND = 500  # one (UN)SUBSCRIBE stays short in Redis, however many channels change at once


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
    resubscribed: bool = False  # on a new connection: its waiters look again once the server confirms


class Subscriptions:
    def __init__(self, pubsub: Callable[[], Any], keepalive: str, *, recheck_every: float = 5.0) -> None:
        self._new_pubsub = pubsub  # makes a redis-py PubSub (Store.pubsub: never waits for the command pool)
        self.keepalive = keepalive
        self.recheck_every = recheck_every
        self._channels: dict[str, _Channel] = {}  # what is wanted: the followed channels and their waiters
        self._pubsub: Any = None  # the connection (None: the reader makes one)
        self._sent: set[str] = set()  # channels subscribed on it, or asked to be
        self._unconfirmed: dict[str, int] = {}  # SUBSCRIBEs sent on it whose confirmation has not come yet
        self._changed = asyncio.Event()  # wakes the writer: the channels wanted changed
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # between the reader and the writer only: who replaces the connection
        self._closing = False
        self.restarts = 0  # how many times the reader was restarted (tests and logs)

    @asynccontextmanager
    async def follow(self, channel: str) -> AsyncIterator[Waiter]:
        """Subscribe to ``channel``; returns once Redis confirmed the subscription (or after a timeout, then
        the waiter's slow re-check covers the gap). The waiter yields decoded messages, or ``None``."""
        waiter = Waiter(self.recheck_every)
        entry = self._channels.get(channel)
        if entry is None:
            entry = self._channels[channel] = _Channel()
            if channel in self._sent and channel not in self._unconfirmed:
                entry.confirmed.set()  # still subscribed on the server (its UNSUBSCRIBE was never sent)
            self._changed.set()
        entry.waiters.add(waiter)
        self._ensure_tasks()
        try:
            with suppress(TimeoutError):
                async with asyncio.timeout(CONFIRM_TIMEOUT):
                    await entry.confirmed.wait()
            yield waiter
        finally:
            self._leave(channel, waiter)

    def _leave(self, channel: str, waiter: Waiter) -> None:
        entry = self._channels.get(channel)
        if entry is None:
            return
        entry.waiters.discard(waiter)
        if not entry.waiters:
            del self._channels[channel]
            self._changed.set()  # the writer unsubscribes it, with the others that were left meanwhile
            self._ensure_tasks()

    def _ensure_tasks(self) -> None:
        if self._closing:
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())
        if self._channels and (self._reader is None or self._reader.done()):
            self._reader = asyncio.get_running_loop().create_task(self._read())
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
            self._reader = asyncio.get_running_loop().create_task(self._read(reconnect=True))
            self._reader.add_done_callback(self._reader_ended)

    async def _read(self, reconnect: bool = False) -> None:
        if reconnect:
            await self._reconnect(self._pubsub)
        pause = 0.0
        while self._channels:
            pubsub = self._pubsub
            try:
                if pubsub is None:
                    await self._reconnect(None)  # the first connection (or Redis was away)
                    continue
                message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                pause = 0.0
            except Exception as exc:  # any failure: reconnect, re-subscribe, have everyone look again
                log.debug("pub/sub connection lost; reconnecting", error=repr(exc))
                await asyncio.sleep(pause)  # a failure that repeats at once never spins the loop
                pause = min(max(pause * 2, 0.05), 1.0)
                await self._reconnect(pubsub)
                continue
            if message is not None and pubsub is self._pubsub:  # not one of a connection replaced meanwhile
                self._dispatch(message)

    async def _write(self) -> None:
        """Bring the connection's subscriptions in line with the channels wanted, in batches, until nothing is
        followed or subscribed any more. A write that fails replaces the connection."""
        while not self._closing and (self._channels or self._sent):
            await self._changed.wait()
            self._changed.clear()
            async with self._lock:
                pubsub = self._pubsub
                if pubsub is None:
                    continue  # the reader is connecting: the new connection subscribes every channel wanted
                add = [channel for channel in self._channels if channel not in self._sent]
                drop = [channel for channel in self._sent if channel not in self._channels]
                try:
                    self._sent.update(add)
                    for channel in add:
                        self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
                    for chunk in _chunks(add):
                        await pubsub.subscribe(*chunk)
                    self._sent.difference_update(drop)
                    for chunk in _chunks(drop):
                        await pubsub.unsubscribe(*chunk)
                    continue
                except Exception as exc:
                    log.debug("pub/sub subscription change failed; reconnecting", error=repr(exc))
            await self._reconnect(pubsub)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if channel is None:
            return
        channel, kind = str(channel), message.get("type")
        if kind == "subscribe":
            outstanding = self._unconfirmed.pop(channel, 0) - 1
            if outstanding > 0:  # the reply to an older SUBSCRIBE of it: the latest one is still to come
                self._unconfirmed[channel] = outstanding
                return
        entry = self._channels.get(channel)
        if entry is None:
            return
        if kind == "subscribe":
            entry.confirmed.set()
            if entry.resubscribed:  # a new connection: anything may have happened meanwhile
                entry.resubscribed = False
                for waiter in list(entry.waiters):
                    waiter.put(None)
        elif kind == "message":
            try:
                payload = loads(message["data"])
            except ValueError:
                payload = None
            for waiter in list(entry.waiters):
                waiter.put(payload if isinstance(payload, dict) else None)

    async def _connect(self, channels: list[str]) -> Any:
        pubsub = self._new_pubsub()
        try:
            await pubsub.subscribe(self.keepalive)
            for chunk in _chunks(channels):
                await pubsub.subscribe(*chunk)
        except BaseException:
            with suppress(Exception):
                await pubsub.aclose()
            raise
        return pubsub

    async def _reconnect(self, broken: Any) -> None:
        """Replace the connection ``broken`` (``None``: make the first one) by a new one subscribed to every
        followed channel, with backoff while Redis is away. Nothing happens if another task replaced it already.

        Each channel counts as unconfirmed again; on a replaced connection its waiters are told to look again
        when the server confirms the new subscription (see ``_dispatch``), so a read never precedes the
        subscription it relies on.
        """
        delay = 0.1
        while self._channels and not self._closing:
            async with self._lock:
                if self._pubsub is not broken:
                    return
                if broken is not None:
                    self._pubsub = None
                    with suppress(Exception):
                        await broken.aclose()
                    for entry in self._channels.values():
                        entry.confirmed.clear()
                        entry.resubscribed = True
                    broken = None  # from here on: the connection to make is the first of a new series
                wanted = list(self._channels)
                self._sent, self._unconfirmed = set(wanted), dict.fromkeys(wanted, 1)
                try:
                    self._pubsub = await self._connect(wanted)
                    self._changed.set()  # channels followed or left while connecting: the writer catches up
                    return
                except Exception as exc:  # Redis still away: wait and try again
                    log.debug("pub/sub re-subscribe failed", error=repr(exc))
                    self._sent, self._unconfirmed = set(), {}
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def close(self) -> None:
        self._closing = True
        for task in (self._reader, self._writer):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task
        if self._pubsub is not None:
            with suppress(Exception):
                await self._pubsub.aclose()
        self._channels.clear()


def _chunks(channels: list[str]) -> list[list[str]]:
    return [channels[i : i + CHANNELS_PER_COMMAND] for i in range(0, len(channels), CHANNELS_PER_COMMAND)]
