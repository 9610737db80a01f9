"""The engine's writes: every state transition, as a typed call of one Lua script.

Each method below sends one script (see :mod:`bdurable.lua`) and returns its reply decoded into the types of
:mod:`bdurable.wire`; nothing else calls a script. Script calls made in the same event-loop tick by
concurrent coroutines are sent together in one pipeline (auto-pipelining): a dispatcher committing fifty
steps pays one round trip, not fifty. Reads are plain commands, in :mod:`bdurable.reads`; pub/sub waits are in
:mod:`bdurable.pubsub`. Those three modules are the only ones that talk to Redis.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    RedisClusterUnreachableError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from bdurable.clock import SYSTEM_CLOCK, Clock
from bdurable.config import Settings
from bdurable.errors import ReplicationError
from bdurable.keys import Keys, ShardKeys
from bdurable.lua import Script, load_library, load_scripts
from bdurable.lua.loader import install_library, is_lost_code
from bdurable.payloads import PayloadCodec
from bdurable.resp import connection_class, engine_cluster_connections
from bdurable.tracing import detect_tracing
from bdurable.wire import (
    BusApplyReply,
    Claim,
    CommitReply,
    ErrorRecord,
    FireReply,
    FollowingStep,
    GaugesReply,
    LostAttempt,
    ReapReply,
    SignalsRead,
    StartReply,
    StepDocument,
    TaskClaim,
    Verdict,
    decode_claims,
)

log = structlog.get_logger("bdurable.store")

__all__ = ["REDIS_ERRORS", "ReadyQueue", "ScriptCall", "Store", "connect_redis"]

#: What an outage looks like to a caller (refused or broken connections, timeouts): retry, never give up.
# What "Redis is not reachable now" looks like: retried by the roles, exit code 4 in the CLI. A cluster whose
# every node is down says so with its own error; one with a primary down answers CLUSTERDOWN from the nodes still
# up (ClusterDownError, MasterDownError), TRYAGAIN while slots move, and has slots no node serves while a
# failover is on its way (SlotNotCoveredError): all pass, as an outage does.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterUnreachableError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    OSError,
)

Arg = str | int | float
RESUME_GROUP = 32  # callers of one pipelined batch resumed per loop pass (see Store._flush)
PUBSUB_CONNECTIONS = 16  # per store: its subscribers (a client's waiters, a role's listener) hold one each
WAIT_TIMEOUT_MS = 2_000  # below the connections' read timeout, so a short-handed WAIT is reported as such

_NO_MAINTENANCE_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def connect_redis(url: str, **options: Any) -> aioredis.Redis:
    """A redis-py asyncio client for a ``redis://``/``rediss://``/``unix://`` URL.

    User, password (ACL) and TLS come from the URL. Responses are decoded as UTF-8 text. The pool blocks
    (up to 30 s) for a free connection instead of failing when many coroutines use Redis at once. Connections
    do not announce the client library (``CLIENT SETINFO``) nor ask for maintenance notifications
    (``CLIENT MAINT_NOTIFICATIONS``): the least-privilege ACL users of docs/security.md grant data commands only,
    and Redis 7.0 would refuse an ACL line that names those subcommands.
    ``redis+cluster://host:port`` (or ``rediss+cluster://``) selects redis-py's cluster client, which finds
    the other nodes from the one given; the typed interface is the same.
    """
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        with _url_options_checked():
            cluster = RedisCluster.from_url(
                f"{CLUSTER_SCHEMES[scheme]}://{rest}",
                decode_responses=True,
                encoding_errors="replace",  # bytes that are not UTF-8 become U+FFFD: data errors, never crashes
                socket_connect_timeout=5,
                socket_keepalive=True,
                driver_info=None,  # no CLIENT SETINFO (see above)
                maint_notifications_config=_NO_MAINTENANCE_NOTIFICATIONS,
                max_connections=options.pop("max_connections", 1024),  # per node: script batches go out concurrently
                **options,
            )
            # A node's connection, made the way the cluster client makes them, but not connected: its options
            # (TLS ones included) are checked now, not at the first command.
            probe = ClusterNode("127.0.0.1", 0, **cluster.nodes_manager.connection_kwargs)
            probe.connection_class(**probe.connection_kwargs)
        return engine_cluster_connections(cluster)  # type: ignore[return-value]  # the same interface as Redis
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        connection_class=connection_class(url),  # commands packed by hiredis in one call (bdurable.resp)
        max_connections=options.pop("max_connections", 128),
        timeout=30,
        decode_responses=True,
        encoding_errors="replace",  # bytes that are not UTF-8 become U+FFFD: data errors, never crashes
        socket_connect_timeout=5,
        driver_info=None,  # no CLIENT SETINFO (see above)
        maint_notifications_config=_NO_MAINTENANCE_NOTIFICATIONS,
        health_check_interval=30,
        **({} if scheme == "unix" else {"socket_keepalive": True}),  # a TCP option: a Unix socket refuses it
        **options,
    )
    with _url_options_checked():  # made now, not at the first command: a connection is made without connecting
        pool.connection_class(**pool.connection_kwargs)
    return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it


@contextmanager
def _url_options_checked() -> Iterator[None]:
    """Report a Redis URL's query parameter that redis-py does not take as the bad input it is (``ValueError``,
    exit 2 in the CLI), where the client is made: redis-py passes unknown ones on as keyword arguments, which
    fail with a ``TypeError`` at the first connection (and a bad TLS option with a ``RedisError``). The URL
    itself is never shown: it may hold a password."""
    try:
        yield
    except TypeError as exc:
        unknown = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
        if unknown is None:
            raise
        raise ValueError(
            f"the Redis URL has a query parameter redis-py does not take here: {unknown.group(1)!r}"
        ) from None
    except RedisError as exc:
        raise ValueError(f"the Redis URL has an invalid option: {exc}") from None


@dataclass(frozen=True, slots=True)
class ReadyQueue:
    """One ready queue a dispatcher listens to: its continuation set, and its new-start set ('' for tasks)."""

    continuations: str
    new_starts: str = ""


@dataclass(slots=True)
class ScriptCall:
    """One pending script call of an auto-pipelined batch."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Arg]
    future: asyncio.Future[Any] = field(repr=False)


def _answer(call: ScriptCall, result: Any) -> None:
    if call.future.done():  # its caller was cancelled, or it was answered already
        return
    if isinstance(result, Exception):
        call.future.set_exception(result)
    else:
        call.future.set_result(result)


@dataclass(frozen=True, slots=True)
class StartRequest:
    """One workflow to create (``Store.start_batch``)."""

    workflow_id: str
    name: str
    version: str
    queue: str
    input: str  # payload
    priority: int = 0
    start_at_ms: int = 0
    trace: str = ""  # the W3C traceparent of the start's span ('' untraced)


class Store:
    """The state transitions of one prefix, each a typed script call."""

    def __init__(
        self, redis: aioredis.Redis, settings: Settings, *, clock: Clock = SYSTEM_CLOCK, service: str = "bdurable"
    ) -> None:
        self.redis = redis
        self.settings = settings
        # Every payload written below goes through it (sealed: compressed, encoded, encrypted as configured);
        # readers open them with the same object (docs/security.md).
        self.codec = PayloadCodec.from_settings(settings)
        # The tracing hooks (no-ops unless OpenTelemetry is installed and configured): carried by the store, which
        # every part of the engine holds. `service` names this process in traces it configures itself.
        self.tracing = detect_tracing(service=service, redact=bool(settings.encryption_keys))
        self.keys = Keys(settings.prefix, settings.shards)
        self.cluster = is_cluster_url(settings.redis_url)
        self._scripts = load_scripts(test_clock=clock.test)
        self._library = load_library(test_clock=clock.test)
        self._by_function: bool | None = None  # FCALL or EVALSHA: chosen on the first call (_choose_transport)
        self._choosing = asyncio.Lock()
        self._pending: list[ScriptCall] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()
        self._listening: aioredis.Redis | None = None  # the connections of pub/sub (see pubsub())
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = SYSTEM_CLOCK, service: str = "bdurable") -> Store:
        return cls(connect_redis(settings.redis_url), settings, clock=clock, service=service)

    @classmethod
    async def connected(cls, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> Store:
        """A store that has reached Redis and checked its shard count (closed again if either fails): what a
        client connects with, and what ``Worker.start`` checks before its roles start."""
        store = cls.from_settings(settings, clock=clock)
        try:
            await store.initialize()
            await store.check_shards()
        except BaseException:
            await store.close()
            raise
        return store

    async def initialize(self) -> None:
        """Load the cluster's slot map before first use (pub/sub needs it); a no-op on a single Redis."""
        if self.cluster:
            await self.redis.initialize()

    async def ping(self) -> None:
        """Whether Redis answers (``/readyz``): on a cluster, every primary (PING to one node says nothing of
        the shards on another that is down)."""
        if self.cluster:
            await self.redis.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await self.redis.ping()

    async def check_shards(self) -> None:
        """Refuse to run with a shard count other than the one this prefix was created with.

        The first process to connect records ``BDURABLE_SHARDS``; a different count would look for
        workflows in the wrong shards, so every later process must agree.
        """
        key = self.keys.shard_count
        await self.redis.set(key, self.settings.shards, nx=True)
        recorded: str | None = await self.redis.get(key)  # type: ignore[assignment]
        if recorded is not None and int(recorded) != self.settings.shards:
            raise ValueError(
                f"BDURABLE_SHARDS is {self.settings.shards} but prefix {self.settings.prefix!r} was created with "
                f"{recorded} shards: every process of one prefix must use the same count"
            )

    def pubsub(self) -> Any:
        """A redis-py ``PubSub`` whose connection never waits for the command pool.

        A subscription holds its connection for as long as it lives, and is made again after any failure. Drawn
        from the command pool, that new connection waited behind busy script batches (the pool blocks when
        full), and every notification of the process waited with it. On one Redis, subscriptions get a pool of
        their own (same URL, credentials and TLS). On a cluster, redis-py picks the node and borrows a connection
        of that node's pool, which fails at once rather than waits when full (it is large: see
        ``connect_redis``).
        """
        if self._closed:
            raise RuntimeError("the store is closed: it makes no more subscriptions")
        if self.cluster:
            return self.redis.pubsub()
        if self._listening is None:
            self._listening = connect_redis(self.settings.redis_url, max_connections=PUBSUB_CONNECTIONS)
        return self._listening.pubsub()

    async def close(self) -> None:
        self._closed = True
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        try:
            if self._listening is not None:
                await self._listening.aclose()
        finally:
            self._listening = None
            await self.redis.aclose()

    # -- workflows -------------------------------------------------------------------------------------

    async def start(
        self,
        workflow_id: str,
        *,
        name: str,
        version: str,
        queue: str,
        input: str,
        priority: int = 0,
        start_at_ms: int = 0,
        trace: str = "",
    ) -> StartReply:
        """Create a workflow (``start_at_ms``: a delayed start, SCHEDULED until then); idempotent on its id.
        ``input`` is the payload's JSON text; ``trace`` the W3C traceparent its steps continue ('' untraced)."""
        shard = self.keys.for_workflow(workflow_id)
        stored = self.codec.seal(input)
        raw = await self._shard(shard, "start", name, version, queue, priority, start_at_ms, trace, workflow_id, stored)
        return StartReply.decode(raw[0])

    async def start_batch(self, shard: ShardKeys, starts: Sequence[StartRequest]) -> list[StartReply]:
        """Create the workflows of one shard in one script call (each independently, idempotent on its id). They
        share name, version, queue, priority, start time and trace (``client.start_many``): sent once."""
        first = starts[0]
        shared = (first.name, first.version, first.queue, first.priority, first.start_at_ms, first.trace)
        flat: list[Arg] = [*shared]
        for r in starts:
            if (r.name, r.version, r.queue, r.priority, r.start_at_ms, r.trace) != shared:
                raise ValueError("the starts of one batch must share name, version, queue, priority, time and trace")
            flat += [r.workflow_id, self.codec.seal(r.input)]
        return [StartReply.decode(raw) for raw in await self._shard(shard, "start", *flat)]

    async def resume(self, workflow_id: str) -> Verdict:
        return Verdict.decode(await self._shard(self.keys.for_workflow(workflow_id), "resume", workflow_id))

    async def send_event(self, workflow_id: str, name: str, payload: str) -> Verdict:
        """'ok' (detail: the workflow's traceparent, '' untraced), 'missing' or 'finished'."""
        shard = self.keys.for_workflow(workflow_id)
        stored = self.codec.seal(payload)
        return Verdict.decode(await self._shard(shard, "bus_send", "event", workflow_id, name, stored))

    async def cancel(self, workflow_id: str, reason: str) -> Verdict:
        shard = self.keys.for_workflow(workflow_id)
        return Verdict.decode(await self._shard(shard, "bus_send", "cancel", workflow_id, reason))

    async def publish_event(self, shard: ShardKeys, name: str, key: str, payload: str) -> int:
        """How many workflows of this shard wait on (name, key): 0 means nothing was stored."""
        return int(await self._shard(shard, "bus_send", "publish", name, key, self.codec.seal(payload)))

    # -- dispatchers -----------------------------------------------------------------------------------

    async def claim(self, shard: ShardKeys, worker: str, budget: int, queues: Iterable[ReadyQueue]) -> list[Claim]:
        flat = [name for queue in queues for name in (queue.continuations, queue.new_starts)]
        return decode_claims(await self._shard(shard, "claim", worker, budget, *flat), shard.number)

    async def claim_when_woken(
        self, shard: ShardKeys, worker: str, budget: int, queues: Sequence[ReadyQueue], timeout: float
    ) -> tuple[bool, list[Claim]]:
        """Block on the queues' wake-up tokens (up to ``timeout`` s) and claim right after, in one pipeline on
        one connection: Redis runs the claim as soon as a token arrives, without a round trip to the
        dispatcher and back (an idle dispatcher's first claim). Returns whether a token came, and the claims
        (the claim runs after a timeout too: it finds what arrived without a token, usually nothing)."""
        flat = [name for queue in queues for name in (queue.continuations, queue.new_starts)]
        keys: list[str] = [shard.tag]
        args: list[Arg] = [self.keys.tag, worker, budget, *flat]
        call = ScriptCall(self._scripts["claim"], keys, args, asyncio.get_running_loop().create_future())
        by_function = self._by_function if self._by_function is not None else await self._choose_transport()
        tokens = [shard.wake(queue.continuations) for queue in queues]
        woken, raw = await self._pipeline([call], by_function, first=("BLPOP", *tokens, timeout))
        if isinstance(woken, Exception):
            raise woken
        if is_lost_code(raw):  # the server lost our code: the claim again, through the path that reloads it
            raw = await self._shard(shard, "claim", worker, budget, *flat)
        elif isinstance(raw, Exception):
            raise raw
        return bool(woken), decode_claims(raw, shard.number)

    async def commit_step(
        self,
        worker: str,
        workflow_id: str,
        *,
        lease: str,
        based_on: int,
        document: StepDocument,
        retention_ms: int,
        handoff: int,
    ) -> CommitReply:
        text, payloads = document.encode(self.codec)
        shard = self.keys.for_workflow(workflow_id)
        raw = await self._shard(
            shard, "commit_step", worker, workflow_id, lease, based_on, retention_ms, handoff, text, *payloads
        )
        return CommitReply.decode(raw, shard.number)

    async def commit_task(
        self,
        worker: str,
        claim: TaskClaim,
        *,
        outcome: str,
        payload: str,
        delay_ms: int,
        handoff: int,
        following: FollowingStep | None = None,
    ) -> CommitReply:
        """Commit an attempt in the shard it was claimed in. ``outcome``: 'ok' (payload: the result), 'retry'
        after ``delay_ms`` or 'fail' (payload: the error record). ``following``: the workflow's next step, run
        with this result, to commit with it when Redis agrees the run it ran on was current."""
        shard = self.keys.shard(claim.shard)
        stored = self.codec.seal(payload) if outcome == "ok" else self.codec.seal_error_text(payload)
        step: list[Any] = [""]
        if following is not None:
            text, payloads = following.document.encode(self.codec)
            step = [following.based_on, following.retention_ms, text, *payloads]
        raw = await self._shard(
            shard, "commit_task", worker, claim.item.encode(), claim.lease, outcome, stored, delay_ms, handoff, *step
        )
        return CommitReply.decode(raw, shard.number)

    async def admit(
        self, shard: ShardKeys, *, limit: str, concurrency: int, key: str, member: str, priority: int
    ) -> bool:
        """Take a slot of a workflow limit for a run about to begin (True), or queue it for one (False)."""
        reply = await self._shard(shard, "admit", limit, concurrency, key, member, priority)
        return str(reply) == "admitted"

    async def hand_back(self, shard: ShardKeys, worker: str, items: dict[str, str]) -> int:
        """Put back held items (item -> the lease we saw) whose claim never reached us; returns how many."""
        flat = [value for pair in items.items() for value in pair]
        return int(await self._shard(shard, "hand_back", worker, *flat))

    async def beat(
        self, worker: str, timeout_ms: int, running: int, info: str = "", registrations: Sequence[str] = ()
    ) -> bool:
        """Whether the worker is still registered (always, when this beat registers it): ``False`` means Redis
        lost the registration, and the caller registers again."""
        return bool(await self._fleet("beat", worker, timeout_ms, running, info, *registrations))

    async def beat_shard(
        self,
        shard: ShardKeys,
        worker: str,
        timeout_ms: int,
        versions: Sequence[tuple[str, str]],
        queues: Iterable[ReadyQueue],
    ) -> None:
        flat_versions = [part for pair in versions for part in pair]
        flat_queues = [name for queue in queues for name in (queue.continuations, queue.new_starts)]
        await self._shard(shard, "beat_shard", worker, timeout_ms, len(versions), *flat_versions, *flat_queues)

    async def leave(self, shard: ShardKeys, worker: str, versions: Sequence[tuple[str, str]]) -> None:
        await self._shard(shard, "leave", worker, *(part for pair in versions for part in pair))

    async def leave_fleet(self, worker: str) -> None:
        await self._fleet("leave_fleet", worker)

    # -- scheduler -------------------------------------------------------------------------------------

    async def fire_timers(self, shard: ShardKeys, batch: int) -> FireReply:
        return FireReply.decode(await self._shard(shard, "fire_timers", batch))

    async def sweep_versions(self, shard: ShardKeys) -> int:
        return int(await self._shard(shard, "sweep_versions"))

    async def expire(self, shard: ShardKeys, batch: int) -> int:
        return int(await self._shard(shard, "expire", batch))

    async def gauges(self, shard: ShardKeys) -> GaugesReply:
        return GaugesReply.decode(await self._shard(shard, "gauges"))

    async def set_aside(self, shard: ShardKeys, count: int = 10) -> dict[str, str]:
        """Some of the work set aside on a shard (``lua/lib.lua``, "work set aside"): its retry timer -> the error."""
        _, found = await self.redis.hscan(shard.faults, count=count)
        pairs = found.items() if isinstance(found, dict) else zip(found[::2], found[1::2], strict=True)  # RESP2/3
        return {str(member): _fault_error(str(why)) for member, why in list(pairs)[:count]}

    # -- reaper ----------------------------------------------------------------------------------------

    async def reap(self, shard: ShardKeys, *, max_workers: int, max_step_crashes: int, retention_ms: int) -> ReapReply:
        return ReapReply.decode(await self._shard(shard, "reap", max_workers, max_step_crashes, retention_ms))

    async def settle_lost(
        self, shard: ShardKeys, decisions: Sequence[tuple[LostAttempt, int | None, ErrorRecord]]
    ) -> tuple[int, int]:
        """Settle lost attempts: retry each after its delay, or give it up (``None``). Returns (retried, dead)."""
        flat: list[Arg] = []
        for lost, delay, error in decisions:
            flat += [lost.item.encode(), lost.lease, -1 if delay is None else delay, self.codec.seal_error(error)]
        retried, dead = await self._shard(shard, "settle_lost", *flat)
        return int(retried), int(dead)

    # -- signal bus ------------------------------------------------------------------------------------

    async def bus_apply(self, shard: ShardKeys, bus: str, batch: int, lease_ms: int) -> BusApplyReply:
        retention_ms = round(self.settings.retention * 1000)
        return BusApplyReply.decode(await self._shard(shard, "bus_apply", bus, batch, lease_ms, retention_ms))

    async def apply_forwarded(self, shard: ShardKeys, message: str) -> None:
        """Apply on ``shard`` an operation another shard left for it (idempotent: safe to repeat)."""
        await self._shard(shard, "x_apply", message, round(self.settings.retention * 1000))

    async def forwarded(self, shard: ShardKeys, bus: str, message: str) -> None:
        """Drop a carried operation from the bus's transit list once applied (one command: atomic by itself;
        a crash before it only means the operation is applied once more, which is idempotent)."""
        await self.redis.lrem(shard.bus_forward(bus), 1, message)

    # -- reads that need one atomic view ---------------------------------------------------------------

    async def read_signals(self, workflow_id: str, seen: int, *, full: bool) -> SignalsRead:
        """The workflow's signals after the first ``seen`` (over all its runs) and its state, atomically."""
        shard = self.keys.for_workflow(workflow_id)
        raw = await self._shard(shard, "read_signals", workflow_id, seen, "1" if full else "0")
        return SignalsRead.decode(raw, full=full, open_text=lambda text: self.codec.open_text(text, view=True))

    # -- schedules and fleet-wide duties ----------------------------------------------------------------

    async def schedule_write(self, schedule_id: str, *, expected: str, due: str, fields: Mapping[str, str]) -> str:
        """Write a schedule if it is as expected ('new', '*' or a revision): 'ok', 'exists', 'missing', 'stale'.
        ``due``: its next due ms, '' when it is not due (paused, over), or 'delete'."""
        flat = [part for pair in fields.items() for part in pair]
        return str(await self._fleet("schedule_write", schedule_id, expected, due, *flat))

    async def lease(self, duty: str, holder: str, ttl_ms: int) -> bool:
        """Take or renew a fleet-wide duty; True while ``holder`` holds it."""
        if ttl_ms <= 0:
            raise ValueError("a lease lasts at least 1 ms (release_lease gives one up)")
        return bool(int(await self._fleet("lease", duty, holder, ttl_ms)))

    async def release_lease(self, duty: str, holder: str) -> None:
        """Give up a duty ``holder`` holds (a process that stops), so that another takes it over at once."""
        await self._fleet("lease", duty, holder, 0)

    # -- dead letters ----------------------------------------------------------------------------------

    async def dlq_resolve(self, shard: ShardKeys, entry_id: str, action: str) -> Verdict:
        return Verdict.decode(await self._shard(shard, "dlq_resolve", entry_id, action))

    async def dlq_purge(self, shard: ShardKeys) -> int:
        return int(await self._shard(shard, "dlq_purge"))

    # -- the transport ---------------------------------------------------------------------------------

    async def _shard(self, shard: ShardKeys, name: str, *args: Arg) -> Any:
        """Call a per-shard script: KEYS[1] is the shard tag, ARGV[1] the fleet tag."""
        return await self._script(name, [shard.tag], [self.keys.tag, *args])

    async def _fleet(self, name: str, *args: Arg) -> Any:
        """Call a fleet-wide script (keys under the prefix's own tag)."""
        return await self._script(name, [self.keys.tag], [self.keys.tag, *args])

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
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
        # Callers resume a group at a time, one loop pass between groups: the script calls the first group makes
        # next go out while the rest are still being handled, so Redis works while Python does. Resumed all at
        # once, a busy dispatcher and Redis take turns on whole batches (measured: ~10% fewer items per second).
        answers = list(zip(batch, results, strict=True))
        try:
            for first in range(0, len(answers), RESUME_GROUP):
                if first:
                    await asyncio.sleep(0)
                for call, result in answers[first : first + RESUME_GROUP]:
                    _answer(call, result)
        except BaseException:  # cancelled between groups (the loop is closing): all still get Redis's reply
            for call, result in answers:
                _answer(call, result)
            raise

    async def _send(self, batch: list[ScriptCall]) -> list[Any]:
        by_function = self._by_function if self._by_function is not None else await self._choose_transport()
        results = await self._send_by(batch, by_function)
        lost = [i for i, result in enumerate(results) if is_lost_code(result)]
        if lost:  # Redis restarted empty, failed over, or was flushed: load our code again, retry those calls
            self._by_function = None
            by_function = await self._choose_transport()
            if not by_function:
                for script in {batch[i].script for i in lost}:
                    await self.redis.script_load(script.source)
            retried = await self._send_by([batch[i] for i in lost], by_function)
            for i, result in zip(lost, retried, strict=True):
                results[i] = result
        return results

    async def _choose_transport(self) -> bool:
        """FCALL of the Function library when it can be installed (once per process, and again when the server
        lost it), EVALSHA of self-contained scripts otherwise (see :mod:`bdurable.lua`)."""
        async with self._choosing:
            if self._by_function is None:
                refused = await install_library(self.redis, self._library)
                if refused:
                    log.info("scripts are sent whole (EVALSHA): the function library cannot be used", reason=refused)
                self._by_function = refused is None
            return self._by_function

    async def _send_by(self, batch: list[ScriptCall], by_function: bool) -> list[Any]:
        if len(batch) == 1 and self.settings.wait_replicas == 0:
            call = batch[0]
            try:
                if by_function:
                    return [await self.redis.fcall(call.script.function, len(call.keys), *call.keys, *call.args)]
                return [await self.redis.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)]
            except ResponseError as exc:
                return [exc]
        return await self._pipeline(batch, by_function)

    async def _pipeline(self, batch: list[ScriptCall], by_function: bool, first: Sequence[Arg] = ()) -> list[Any]:
        """One round trip for the batch; on a cluster, redis-py's cluster pipeline groups the calls by node (one
        round trip per node, sent concurrently), each call to the node of its shard's slot. ``first``: a command
        sent before the batch, its reply first in the list (a blocking read: the batch runs once it returns)."""
        pipe = self.redis.pipeline(transaction=False)
        if first:
            pipe.execute_command(*first)
        for call in batch:
            if by_function:
                pipe.fcall(call.script.function, len(call.keys), *call.keys, *call.args)
            else:
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


def _fault_error(record: str) -> str:
    """The error of a ``T:faults`` record (``{"error", "at"}``), or the record itself if it is not one."""
    try:
        error = json.loads(record).get("error")
    except (ValueError, AttributeError):
        return record
    return str(error) if error is not None else record
