"""The engine's reads: plain Redis commands that never change state, each returning typed data.

The client (state, history, lists, dead letters, signals), the dispatcher (a workflow's history after an
eviction, its own processing hashes) and the reaper read through here; writes are the scripts of
:mod:`bdurable.store`. Reads are pipelined per shard, and never scan the keyspace: lists walk the per-status
indexes.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from bdurable.clock import SYSTEM_CLOCK, Clock
from bdurable.codec import decode, loads
from bdurable.errors import DurableError, InvalidInputError
from bdurable.keys import Keys, ShardKeys
from bdurable.model import DeadLetter, DispatcherInfo, HistoryEntry, Status, WorkflowPage, WorkflowState
from bdurable.payloads import PayloadCodec
from bdurable.wire import CallRecord, deliveries

__all__ = ["ListQuery", "Reads", "Registration", "dead_letter", "ms", "outcome_from_message", "state_from_hash"]

# How often `full_record` reads a workflow that keeps committing steps before it gives up.
_FULL_RECORD_ATTEMPTS = 20
PREFIX_BATCH = 500  # ids judged per round trip when a listing by id prefix has other filters too


def ms(value: str | int | None) -> datetime:
    """A Redis-clock millisecond timestamp as an aware datetime."""
    return datetime.fromtimestamp(int(value or 0) / 1000, UTC)


# Reads without keys: what a process with no payload settings can open (compressed payloads), and a
# placeholder for the rest.
_UNKEYED = PayloadCodec()


def _json_or_text(text: str | None) -> Any:
    """Decode a stored JSON value (not a payload); a corrupt one is shown as its raw text rather than failing."""
    try:
        return decode(text)
    except ValueError:
        return text


def _payload(text: str | None, codec: PayloadCodec, strict: bool) -> Any:
    """A stored payload's value. ``strict``: raise ``PayloadUnreadableError`` when it cannot be opened (the value
    is needed); else a view, with a placeholder (``"<encrypted>"``) instead."""
    if text is None:
        return None
    if not strict:
        return codec.view(text)
    try:
        return codec.open(text)
    except ValueError:  # not JSON at all (corrupted in Redis): shown as it is, as before payloads were sealed
        return text


# The fields of the workflow hash that ``state_from_hash`` reads, the input aside.
STATE_FIELDS_BUT_INPUT = (
    "name", "version", "status", "step", "waiting_on", "output", "error", "parent_id", "created_at", "updated_at",
    "run",
)  # fmt: skip


def state_from_hash(
    workflow_id: str, data: Mapping[str, str], codec: PayloadCodec = _UNKEYED, *, strict: bool = False
) -> WorkflowState:
    """A ``WorkflowState`` from the workflow's Redis hash, its payloads opened with ``codec`` (see
    :func:`_payload` for ``strict``, which applies to the outcome: what ``result()`` returns or raises)."""
    return WorkflowState(
        workflow_id=workflow_id,
        name=data.get("name", ""),
        version=data.get("version", ""),
        status=data.get("status", ""),
        step=int(data.get("step") or 0),
        waiting_on=data.get("waiting_on") or None,
        input=codec.view(data.get("input")),
        output=_payload(data.get("output"), codec, strict) if data.get("output") else None,
        error=_payload(data.get("error"), codec, strict) if data.get("error") else None,
        parent_id=data.get("parent_id") or None,
        created_at=ms(data.get("created_at")),
        updated_at=ms(data.get("updated_at")),
        run=int(data.get("run") or 1),
    )


def outcome_from_message(
    state: WorkflowState, message: Mapping[str, Any], codec: PayloadCodec = _UNKEYED, *, strict: bool = False
) -> WorkflowState:
    """A finished workflow's state from its finish message, which carries the outcome when it is small (a
    finished workflow never changes, so the message is the truth)."""
    output, error = message.get("output"), message.get("error")
    return dataclasses.replace(
        state,
        status=str(message["status"]),
        output=_payload(output, codec, strict) if output else None,
        error=_payload(error, codec, strict) if error else None,
    )


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What ``client.list`` (and the console) asks for: every field optional but the page size."""

    status: str | None = None
    name: str | None = None
    version: str | None = None
    prefix: str | None = None  # id prefix: the page is then ordered by id
    since_ms: int | None = None  # created at or after (ms, Redis clock)
    until_ms: int | None = None  # created at or before
    limit: int = 100
    cursor: str | None = None

    def check(self) -> None:
        if self.status is not None and self.status not in Status.__members__:
            raise InvalidInputError(f"unknown status {self.status!r}; use one of {', '.join(Status.__members__)}")
        limit: object = self.limit  # callers without a type checker may pass anything
        if not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidInputError("limit must be an integer from 1 to 10000")
        if self.prefix is None and self.cursor:
            self.after()

    def after(self) -> tuple[int, str] | None:
        return parse_cursor(self.cursor)

    def matches_kind(self, name: str, version: str) -> bool:
        return (self.name is None or name == self.name) and (self.version is None or version == self.version)

    @property
    def filters_beyond_prefix(self) -> bool:
        return any(v is not None for v in (self.status, self.name, self.version, self.since_ms, self.until_ms))

    def matches(self, status: str, name: str, version: str, created_ms: int) -> bool:
        """Whether a workflow with these fields of its hash passes the filters (the prefix aside)."""
        return (
            (self.status is None or status == self.status)
            and self.matches_kind(name, version)
            and (self.since_ms is None or created_ms >= self.since_ms)
            and (self.until_ms is None or created_ms <= self.until_ms)
        )


@dataclass(frozen=True, slots=True)
class Registration:
    """What dispatchers registered for one workflow version."""

    version: str
    queue: str
    schema: dict[str, Any] | None


class Reads:
    """Typed reads of one prefix's state."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, codec: PayloadCodec | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.codec = codec if codec is not None else _UNKEYED  # opens the payloads read (views: placeholders)
        self.clock = clock

    # -- one workflow ----------------------------------------------------------------------------------

    async def state(self, workflow_id: str, *, strict: bool = False, with_input: bool = True) -> WorkflowState | None:
        """The workflow's current state, or ``None`` if it is unknown or expired. ``strict``: an output or error
        that cannot be opened raises ``PayloadUnreadableError`` (else it shows as a placeholder).
        ``with_input=False`` (``result()``'s waits): the input is neither read nor opened (it shows as ``None``),
        so that a thousand waits on workflows with 1 MiB inputs do not move and parse a gigabyte."""
        key = self.keys.for_workflow(workflow_id).wf(workflow_id)
        data: dict[str, str]
        if with_input:
            data = await self.redis.hgetall(key)  # type: ignore[assignment]  # redis-py's stubs
        else:
            values: list[str | None] = await self.redis.hmget(key, STATE_FIELDS_BUT_INPUT)  # type: ignore[assignment]
            data = {f: v for f, v in zip(STATE_FIELDS_BUT_INPUT, values, strict=True) if v is not None}
        if not data or "name" not in data:
            return None
        return state_from_hash(workflow_id, data, self.codec, strict=strict)

    async def status(self, workflow_id: str) -> str | None:
        value: str | None = await self.redis.hget(  # type: ignore[assignment]  # redis-py's stubs
            self.keys.for_workflow(workflow_id).wf(workflow_id), "status"
        )
        return value

    async def recorded(self, workflow_id: str) -> tuple[list[str], dict[str, str]]:
        """A workflow's whole inbox and its call records (what a replay from scratch needs)."""
        shard = self.keys.for_workflow(workflow_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(shard.inbox(workflow_id), 0, -1)
            pipe.hgetall(shard.calls(workflow_id))
            inbox, calls = await pipe.execute()
        return [str(e) for e in inbox], {str(k): str(v) for k, v in calls.items()}

    async def full_record(
        self, workflow_id: str
    ) -> tuple[dict[str, str], builtins.list[str], dict[str, str], builtins.list[str]]:
        """Everything recorded of one workflow, as of one step: its hash, inbox, call records and signal log
        (what ``bdurable export`` writes). The hash is empty if the workflow is unknown.

        One round trip, without ``MULTI`` (which the documented ACL users are not granted): ``cache_len`` (how
        many inbox entries the last committed step consumed) is read before and after, and a step committed in
        between moves it, so the reads are repeated until none did: the calls are always those of that count.
        """
        shard = self.keys.for_workflow(workflow_id)
        for _ in range(_FULL_RECORD_ATTEMPTS):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(shard.wf(workflow_id))
                pipe.lrange(shard.inbox(workflow_id), 0, -1)
                pipe.hgetall(shard.calls(workflow_id))
                pipe.lrange(shard.signals(workflow_id), 0, -1)
                pipe.hget(shard.wf(workflow_id), "cache_len")
                fields, inbox, calls, signals, consumed_after = await pipe.execute()
            if fields.get("cache_len") == consumed_after:
                return (
                    {str(k): str(v) for k, v in fields.items()},
                    [str(e) for e in inbox],
                    {str(k): str(v) for k, v in calls.items()},
                    [str(e) for e in signals],
                )
        raise DurableError(
            f"workflow {workflow_id!r} committed a step during each of {_FULL_RECORD_ATTEMPTS} reads of its "
            "history; try again"
        )

    async def history(self, workflow_id: str) -> builtins.list[HistoryEntry]:
        """The recorded durable calls of a workflow, in order, with their results."""
        inbox, calls = await self.recorded(workflow_id)
        opened = (self.codec.open_text(raw, view=True) for raw in inbox)
        results: dict[int, Any] = {
            seq: d.value if d.ok else d.error.to_json() if d.error else None for seq, d in deliveries(opened).items()
        }
        entries = []
        for field, raw in calls.items():
            if not field.isdigit():
                continue
            seq = int(field)
            record = CallRecord.decode(raw)
            if record.kind == "value":
                continue
            started, finished = calls.get(f"{seq}:t"), calls.get(f"{seq}:f")
            entries.append(
                HistoryEntry(
                    seq=seq,
                    kind=record.kind,
                    name=record.name,
                    status=calls.get(f"{seq}:s", "pending"),
                    result=results.get(seq),
                    started_at=ms(started) if started else None,
                    finished_at=ms(finished) if finished else None,
                    child_id=str(record.extra["id"]) if record.kind == "child" and "id" in record.extra else None,
                    args=self.codec.view(calls[f"{seq}:a"]) if f"{seq}:a" in calls else None,
                    attempts=int(calls[f"{seq}:n"]) if f"{seq}:n" in calls else None,
                )
            )
        return sorted(entries, key=lambda e: e.seq)

    # -- registrations ---------------------------------------------------------------------------------

    async def now_ms(self) -> int:
        """The Redis server's clock (what every lease and timer uses; a test environment's moves on)."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000 + self.clock.offset_ms

    async def registration(self, name: str, version: str | None, workflow_id: str) -> Registration | None:
        """What to start by name: ``version`` if registered, else the newest registered version that a live
        dispatcher holds (in the workflow's shard), else the newest registered. ``None``: nothing matches."""
        shard = self.keys.for_workflow(workflow_id)
        now = await self.now_ms()  # TIME cannot be pipelined on a cluster
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(self.keys.versions(name), 0, -1)
            pipe.zrange(shard.live(name), 0, -1, withscores=True)
            versions, live = await pipe.execute()
        if not versions or (version is not None and version not in versions):
            return None
        if version is None:
            live_versions = {member.rpartition("|")[0] for member, expiry in live if expiry > now}
            version = next((v for v in versions if v in live_versions), versions[0])
        entry = await self.redis.hget(self.keys.registry, f"{name}@{version}")
        info = loads(entry) if entry else {}
        return Registration(str(version), str(info.get("queue", "default")), info.get("schema"))

    async def registered_versions(self, name: str) -> builtins.list[str]:
        found: builtins.list[str] = await self.redis.zrevrange(self.keys.versions(name), 0, -1)  # type: ignore[assignment]
        return found

    # -- lists -----------------------------------------------------------------------------------------

    async def page(self, query: ListQuery) -> WorkflowPage:
        """One page of workflows matching ``query``, from the indexes alone (never a scan of the keyspace).

        Without an id prefix: newest first, from the indexes of (status, workflow version), merged; the cursor is
        the position of the last item returned (created time and id), so pages neither skip nor repeat items
        when workflows start or change status meanwhile. With an id prefix: by id, from the index of ids.
        """
        query.check()
        if query.prefix is not None:
            return await self._page_by_id(query)
        after = query.after()
        bounds = [b for b in (after[0] if after else None, query.until_ms) if b is not None]
        high: int | str = min(bounds) if bounds else "+inf"
        low = query.since_ms if query.since_ms is not None else "-inf"
        statuses = [query.status] if query.status else list(Status)
        found: builtins.list[tuple[int, str, ShardKeys]] = []
        for shard in self.keys.all_shards():
            kinds = [k for k in await self._kinds(shard) if query.matches_kind(*k)]
            indexes = [shard.index(status, name, version) for status in statuses for name, version in kinds]
            found += [
                (score, member, shard)
                for score, member in await self._ranked(indexes, (low, high), after, query.limit + 1)
            ]
        found.sort(key=lambda item: (item[0], item[1]), reverse=True)
        page = found[: query.limit]
        next_cursor = f"{page[-1][0]}:{page[-1][1]}" if len(found) > query.limit else None
        return WorkflowPage(await self._states([(member, shard) for _, member, shard in page]), next_cursor)

    async def _kinds(self, shard: ShardKeys) -> builtins.list[tuple[str, str]]:
        """The (name, version) pairs this shard has indexed."""
        members: set[str] = await self.redis.smembers(shard.kinds)  # type: ignore[assignment]  # redis-py's stubs
        return sorted(tuple(m.split("\t", 1)) for m in members if "\t" in m)  # type: ignore[misc]

    async def _ranked(
        self,
        indexes: builtins.list[str],
        bounds: tuple[int | str, int | str],
        after: tuple[int, str] | None,
        wanted: int,
        *,
        newest_first: bool = True,
    ) -> builtins.list[tuple[int, str]]:
        """Up to ``wanted`` entries of each of these indexes (sorted sets scored by a time in ms) within
        ``bounds`` (lowest, highest), in order (newest first, or oldest first), after the cursor (entries of the
        same ms in the order of their ids)."""
        found: builtins.list[tuple[int, str]] = []
        offset, batch = 0, wanted + 20
        live = list(indexes)
        low, high = bounds
        while live:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in live:
                    if newest_first:
                        pipe.zrevrangebyscore(key, high, low, start=offset, num=batch, withscores=True)
                    else:
                        pipe.zrangebyscore(key, low, high, start=offset, num=batch, withscores=True)
                pages: builtins.list[builtins.list[tuple[str, float]]] = await pipe.execute()
            more = []
            for key, rows in zip(live, pages, strict=True):
                taken = [(int(score), member) for member, score in rows]
                kept = [e for e in taken if after is None or (e < after if newest_first else e > after)]
                found += kept
                if len(rows) == batch and len(kept) < wanted:  # ties with the cursor used the batch: read on
                    more.append(key)
            live, offset = more, offset + batch
        return found

    async def _page_by_id(self, query: ListQuery) -> WorkflowPage:
        """Workflows whose id starts with the prefix, by id, filtered by the rest of the query as they are read.

        Each shard is read until it gave one more match than the page holds (or ran out), so the first matches
        of the merged shards are the page, and the next one says whether there is more. With other filters,
        ids are read in batches of at least ``PREFIX_BATCH`` and judged on four small fields of their hash;
        only the matches are read whole (a hash holds the input and output, up to a payload's size each).
        """
        prefix = query.prefix or ""
        filtered = query.filters_beyond_prefix
        wanted = max(query.limit + 1, PREFIX_BATCH) if filtered else query.limit + 1
        matched: builtins.list[WorkflowState] = []
        for shard in self.keys.all_shards():
            # After the cursor, but never before the prefix (a cursor from elsewhere may sort before it).
            start, found = (f"({query.cursor}" if query.cursor and query.cursor >= prefix else f"[{prefix}"), 0
            while found <= query.limit:
                batch: builtins.list[str] = await self.redis.zrangebylex(  # type: ignore[assignment]
                    shard.ids, start, f"[{prefix}\U0010ffff", start=0, num=wanted
                )
                kept = await self._matching(query, shard, batch) if filtered else batch
                # Read whole, and judged again: an id whose workflow expired (the index drops it later) or
                # changed meanwhile is not counted.
                for state in await self._states([(member, shard) for member in kept]):
                    if query.matches(state.status, state.name, state.version, _created_ms(state)):
                        matched.append(state)
                        found += 1
                if len(batch) < wanted:
                    break
                start = f"({batch[-1]}"
        matched.sort(key=lambda state: state.workflow_id)
        page = matched[: query.limit]
        return WorkflowPage(page, page[-1].workflow_id if len(matched) > query.limit else None)

    async def _matching(self, query: ListQuery, shard: ShardKeys, ids: builtins.list[str]) -> builtins.list[str]:
        """The ids whose workflow passes the query's filters, judged on its status, name, version and creation."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for member in ids:
                pipe.hmget(shard.wf(member), "status", "name", "version", "created_at")
            rows: builtins.list[builtins.list[str | None]] = await pipe.execute()
        return [
            member
            for member, (status, name, version, created) in zip(ids, rows, strict=True)
            if status is not None and query.matches(status, name or "", version or "", int(created or 0))
        ]

    async def _states(self, members: builtins.list[tuple[str, ShardKeys]]) -> builtins.list[WorkflowState]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for member, shard in members:
                pipe.hgetall(shard.wf(member))
            rows = await pipe.execute()
        return [state_from_hash(member, row, self.codec) for (member, _), row in zip(members, rows, strict=True) if row]

    async def counts(self) -> dict[str, int]:
        """How many workflows there are in each status, over every shard (from the indexes' sizes)."""
        totals = dict.fromkeys(Status, 0)
        for shard in self.keys.all_shards():
            kinds = await self._kinds(shard)
            keys = [(status, shard.index(status, name, version)) for status in Status for name, version in kinds]
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, key in keys:
                    pipe.zcard(key)
                sizes = await pipe.execute()
            for (status, _), size in zip(keys, sizes, strict=True):
                totals[status] += int(size)
        return {str(status): count for status, count in totals.items()}

    # -- dead letters ----------------------------------------------------------------------------------

    async def dead_letters(self) -> builtins.list[DeadLetter]:
        """Every dead-letter entry, oldest first."""
        entries, _ = await self.dead_letter_page()
        return entries

    async def dead_letter_page(
        self, limit: int | None = None, cursor: str | None = None
    ) -> tuple[builtins.list[DeadLetter], str | None]:
        """Dead-letter entries, oldest first (by creation, then id): every one, or ``limit`` of them after
        ``cursor``; and the cursor of the next page (``None`` on the last). Only the page's entries are read
        (an entry holds its arguments and traceback, up to a payload's size each)."""
        after = parse_cursor(cursor)
        found: builtins.list[tuple[int, str, ShardKeys]] = []
        for shard in self.keys.all_shards():
            if limit is None:
                rows: builtins.list[tuple[str, float]] = await self.redis.zrange(  # type: ignore[assignment]
                    shard.dlq, 0, -1, withscores=True
                )
                ranked = [(int(score), entry_id) for entry_id, score in rows]
            else:
                low = after[0] if after is not None else "-inf"
                ranked = await self._ranked([shard.dlq], (low, "+inf"), after, limit + 1, newest_first=False)
            found += [(score, entry_id, shard) for score, entry_id in ranked]
        found.sort(key=lambda item: (item[0], item[1]))
        page = found if limit is None else found[:limit]
        next_cursor = f"{page[-1][0]}:{page[-1][1]}" if limit is not None and len(found) > limit else None
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, entry_id, shard in page:
                pipe.hgetall(shard.dlq_entry(entry_id))
            rows_read: builtins.list[dict[str, str]] = await pipe.execute()
        entries = [
            dead_letter(entry_id, row, self.codec)
            for (_, entry_id, _), row in zip(page, rows_read, strict=True)
            if row  # resolved since its id was read
        ]
        return entries, next_cursor

    async def dead_letter(self, shard: ShardKeys, entry_id: str) -> DeadLetter | None:
        row: dict[str, str] = await self.redis.hgetall(shard.dlq_entry(entry_id))  # type: ignore[assignment]
        return dead_letter(entry_id, row, self.codec) if row else None

    # -- dispatchers -----------------------------------------------------------------------------------

    async def processing(self, shard: ShardKeys, worker: str) -> dict[str, str]:
        """What a dispatcher holds in one shard: item -> lease."""
        held: dict[str, str] = await self.redis.hgetall(shard.processing(worker))  # type: ignore[assignment]
        return held

    async def dispatchers(self) -> builtins.list[DispatcherInfo]:
        """Every dispatcher the fleet-wide registry knows, live or recently dead, newest heartbeat first."""
        now = await self.now_ms()
        entries: builtins.list[tuple[str, float]] = await self.redis.zrevrange(  # type: ignore[assignment]
            self.keys.workers, 0, -1, withscores=True
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker, _ in entries:
                pipe.hgetall(self.keys.worker(worker))
            rows: builtins.list[dict[str, str]] = await pipe.execute()
        found = []
        for (worker, expiry), row in zip(entries, rows, strict=True):
            info = _json_or_text(row.get("info")) or {}
            info = info if isinstance(info, dict) else {}
            found.append(
                DispatcherInfo(
                    worker_id=worker,
                    alive=expiry > now,
                    expires_at=ms(int(expiry)),
                    started_at=ms(row["started_at"]) if row.get("started_at") else None,
                    last_beat=ms(row["beat_at"]) if row.get("beat_at") else None,
                    workflows=[str(w) for w in info.get("workflows", [])],
                    tasks=[str(t) for t in info.get("tasks", [])],
                    queues=[str(q) for q in info.get("queues", [])],
                    concurrency=int(info.get("concurrency", 0)),
                    running=int(row.get("running") or 0),
                )
            )
        return found

    async def timers_due(self, within_ms: int) -> int:
        """Timers (sleeps, retries, event timeouts, delayed starts) due within ``within_ms`` from now."""
        now = await self.now_ms()
        total = 0
        for shard in self.keys.all_shards():
            total += int(await self.redis.zcount(shard.timers, "-inf", now + within_ms))
        return total

    async def schedule(self, schedule_id: str) -> dict[str, str] | None:
        """A schedule's hash (its spec and state), or ``None``."""
        fields: dict[str, str] = await self.redis.hgetall(self.keys.schedule(schedule_id))  # type: ignore[assignment]
        return fields or None

    async def schedule_ids(self) -> builtins.list[str]:
        ids: set[str] = await self.redis.smembers(self.keys.schedule_ids)  # type: ignore[assignment]
        return sorted(ids)

    async def due_schedules(self, now_ms: int) -> builtins.list[str]:
        """Schedules whose next time (or a buffered run) is due by ``now_ms``."""
        found: builtins.list[str] = await self.redis.zrangebyscore(self.keys.schedules_due, "-inf", now_ms)  # type: ignore[assignment]
        return found

    async def next_schedules(self, count: int) -> builtins.list[tuple[str, int]]:
        """The ``count`` schedules due first: (id, due ms)."""
        first: builtins.list[tuple[str, float]] = await self.redis.zrange(  # type: ignore[assignment]
            self.keys.schedules_due, 0, count - 1, withscores=True
        )
        return [(schedule_id, int(score)) for schedule_id, score in first]

    async def expired_workers(self) -> builtins.list[str]:
        """Dispatchers in the fleet-wide registry whose heartbeat expired."""
        now = await self.now_ms()
        found: builtins.list[str] = await self.redis.zrangebyscore(self.keys.workers, "-inf", f"({now}")  # type: ignore[assignment]
        return found


def parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    """A page's cursor (``"<ms>:<id>"``, the position of the last item of the page before), or ``None``."""
    if not cursor:
        return None
    score_text, _, member = cursor.partition(":")
    if not score_text.isdigit() or not member:
        raise InvalidInputError(f"invalid cursor {cursor!r}")
    return int(score_text), member


def dead_letter(entry_id: str, row: Mapping[str, str], codec: PayloadCodec = _UNKEYED) -> DeadLetter:
    """A dead-letter entry from its hash; its arguments and error are views (placeholders without the keys)."""
    return DeadLetter(
        entry_id=entry_id,
        workflow_id=row.get("workflow_id", ""),
        task=row.get("task", ""),
        args=codec.view(row.get("args")),
        error=codec.view(row.get("error")),
        attempts=int(row.get("attempts") or 0),
        parked=row.get("parked") == "1",
        created_at=ms(row.get("created_at")),
    )


def _created_ms(state: WorkflowState) -> int:
    return round(state.created_at.timestamp() * 1000)
