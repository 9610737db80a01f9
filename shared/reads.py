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

from bdurable.codec import decode, loads
from bdurable.errors import InvalidInputError
from bdurable.keys import Keys, ShardKeys
from bdurable.model import DeadLetter, HistoryEntry, Status, WorkflowPage, WorkflowState
from bdurable.wire import CallRecord, Delivery, SignalRecord, decode_inbox

__all__ = ["Reads", "Registration", "dead_letter", "ms", "outcome_from_message", "state_from_hash"]


def ms(value: str | int | None) -> datetime:
    """A Redis-clock millisecond timestamp as an aware datetime."""
    return datetime.fromtimestamp(int(value or 0) / 1000, UTC)


def _json_or_text(text: str | None) -> Any:
    """Decode a stored JSON value; a corrupt one is shown as its raw text rather than failing the read."""
    try:
        return decode(text)
    except ValueError:
        return text


def state_from_hash(workflow_id: str, data: Mapping[str, str]) -> WorkflowState:
    """A ``WorkflowState`` from the workflow's Redis hash."""
    return WorkflowState(
        workflow_id=workflow_id,
        name=data.get("name", ""),
        version=data.get("version", ""),
        status=data.get("status", ""),
        step=int(data.get("step") or 0),
        waiting_on=data.get("waiting_on") or None,
        input=_json_or_text(data.get("input")),
        output=_json_or_text(data.get("output")) if data.get("output") else None,
        error=_json_or_text(data.get("error")) if data.get("error") else None,
        parent_id=data.get("parent_id") or None,
        created_at=ms(data.get("created_at")),
        updated_at=ms(data.get("updated_at")),
    )


def outcome_from_message(state: WorkflowState, message: Mapping[str, Any]) -> WorkflowState:
    """A finished workflow's state from its finish message, which carries the outcome when it is small (a
    finished workflow never changes, so the message is the truth)."""
    output, error = message.get("output"), message.get("error")
    return dataclasses.replace(
        state,
        status=str(message["status"]),
        output=_json_or_text(output) if output else None,
        error=_json_or_text(error) if error else None,
    )


@dataclass(frozen=True, slots=True)
class Registration:
    """What dispatchers registered for one workflow version."""

    version: str
    queue: str
    schema: dict[str, Any] | None


class Reads:
    """Typed reads of one prefix's state."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    # -- one workflow ----------------------------------------------------------------------------------

    async def state(self, workflow_id: str) -> WorkflowState | None:
        """The workflow's current state, or ``None`` if it is unknown or expired."""
        data: dict[str, str] = await self.redis.hgetall(  # type: ignore[assignment]  # redis-py's stubs
            self.keys.for_workflow(workflow_id).wf(workflow_id)
        )
        if not data or "name" not in data:
            return None
        return state_from_hash(workflow_id, data)

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

    async def history(self, workflow_id: str) -> builtins.list[HistoryEntry]:
        """The recorded durable calls of a workflow, in order, with their results."""
        inbox, calls = await self.recorded(workflow_id)
        results: dict[int, Any] = {}
        for raw in inbox:
            entry = decode_inbox(raw)
            if isinstance(entry, Delivery):
                results[entry.seq] = entry.value if entry.ok else entry.error.to_json() if entry.error else None
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
                )
            )
        return sorted(entries, key=lambda e: e.seq)

    async def signals_since(self, workflow_id: str, seen: int) -> tuple[str | None, builtins.list[SignalRecord]]:
        """The workflow's status, then the signals logged after the first ``seen`` (status first: if it says
        finished, the log read after it holds every signal)."""
        shard = self.keys.for_workflow(workflow_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(shard.wf(workflow_id), "status")
            pipe.lrange(shard.signals(workflow_id), seen, -1)
            status, fresh = await pipe.execute()
        return status, [SignalRecord.decode(raw) for raw in fresh]

    async def snapshot_since(
        self, workflow_id: str, seen: int
    ) -> tuple[WorkflowState | None, builtins.list[SignalRecord]]:
        """The workflow's state, then the signals logged after the first ``seen`` (for ``watch``)."""
        shard = self.keys.for_workflow(workflow_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(shard.wf(workflow_id))
            pipe.lrange(shard.signals(workflow_id), seen, -1)
            data, fresh = await pipe.execute()
        state = state_from_hash(workflow_id, data) if data and "name" in data else None
        return state, [SignalRecord.decode(raw) for raw in fresh]

    # -- registrations ---------------------------------------------------------------------------------

    async def now_ms(self) -> int:
        """The Redis server's clock (what every lease and timer uses)."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

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

    async def page(self, status: str | None, name: str | None, limit: int, cursor: str | None) -> WorkflowPage:
        """Workflows, newest first, optionally by status and name; ``cursor`` continues a previous page.

        The cursor is the position of the last item returned (created time and id), so pages neither skip
        nor repeat items when workflows start or change status meanwhile.
        """
        if status is not None and status not in Status.__members__:
            raise InvalidInputError(f"unknown status {status!r}; use one of {', '.join(Status.__members__)}")
        if limit < 1:
            raise InvalidInputError("limit must be >= 1")
        after: tuple[int, str] | None = None
        if cursor:
            score_text, _, member = cursor.partition(":")
            if not score_text.isdigit() or not member:
                raise InvalidInputError(f"invalid cursor {cursor!r}")
            after = (int(score_text), member)
        found: builtins.list[tuple[int, str, ShardKeys]] = []
        statuses = [status] if status else list(Status)  # every workflow is in exactly one status index
        for shard in self.keys.all_shards():
            for each in statuses:
                found += await self._page_of_shard(shard, shard.index_status(each), name, limit + 1, after)
        found.sort(key=lambda item: (item[0], item[1]), reverse=True)
        page = found[:limit]
        next_cursor = f"{page[-1][0]}:{page[-1][1]}" if len(found) > limit else None
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, member, shard in page:
                pipe.hgetall(shard.wf(member))
            rows = await pipe.execute()
        states = [state_from_hash(member, row) for (_, member, _), row in zip(page, rows, strict=True) if row]
        return WorkflowPage(states, next_cursor)

    async def _page_of_shard(
        self, shard: ShardKeys, key: str, name: str | None, wanted: int, after: tuple[int, str] | None
    ) -> builtins.list[tuple[int, str, ShardKeys]]:
        """Up to ``wanted`` index entries of one shard after the cursor, newest first, filtered by name."""
        max_score = str(after[0]) if after else "+inf"
        found: builtins.list[tuple[int, str, ShardKeys]] = []
        offset, batch = 0, max(wanted * 2, 50)
        while len(found) < wanted:
            rows: builtins.list[tuple[str, float]] = await self.redis.zrevrangebyscore(  # type: ignore[assignment]
                key, max_score, "-inf", start=offset, num=batch, withscores=True
            )
            offset += len(rows)
            candidates = [
                (int(score), member)
                for member, score in rows
                if after is None or (int(score), member) < after  # same-ms entries: order by id
            ]
            if name is not None and candidates:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for _, member in candidates:
                        pipe.hget(shard.wf(member), "name")
                    names = await pipe.execute()
                candidates = [c for c, n in zip(candidates, names, strict=True) if n == name]
            found += [(score, member, shard) for score, member in candidates]
            if len(rows) < batch:
                break
        return found[:wanted]

    # -- dead letters ----------------------------------------------------------------------------------

    async def dead_letters(self) -> builtins.list[DeadLetter]:
        """Every dead-letter entry, oldest first."""
        entries: builtins.list[DeadLetter] = []
        for shard in self.keys.all_shards():
            ids: builtins.list[str] = await self.redis.zrange(shard.dlq, 0, -1)  # type: ignore[assignment]
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry_id in ids:
                    pipe.hgetall(shard.dlq_entry(entry_id))
                rows = await pipe.execute()
            entries += [dead_letter(entry_id, row) for entry_id, row in zip(ids, rows, strict=True) if row]
        return sorted(entries, key=lambda e: e.created_at)

    async def dead_letter(self, shard: ShardKeys, entry_id: str) -> DeadLetter | None:
        row: dict[str, str] = await self.redis.hgetall(shard.dlq_entry(entry_id))  # type: ignore[assignment]
        return dead_letter(entry_id, row) if row else None

    # -- dispatchers -----------------------------------------------------------------------------------

    async def processing(self, shard: ShardKeys, worker: str) -> dict[str, str]:
        """What a dispatcher holds in one shard: item -> lease."""
        held: dict[str, str] = await self.redis.hgetall(shard.processing(worker))  # type: ignore[assignment]
        return held

    async def expired_workers(self) -> builtins.list[str]:
        """Dispatchers in the fleet-wide registry whose heartbeat expired."""
        now = await self.now_ms()
        found: builtins.list[str] = await self.redis.zrangebyscore(self.keys.workers, "-inf", f"({now}")  # type: ignore[assignment]
        return found


def dead_letter(entry_id: str, row: Mapping[str, str]) -> DeadLetter:
    return DeadLetter(
        entry_id=entry_id,
        workflow_id=row.get("workflow_id", ""),
        task=row.get("task", ""),
        args=decode(row.get("args")),
        error=decode(row.get("error")),
        attempts=int(row.get("attempts") or 0),
        parked=row.get("parked") == "1",
        created_at=ms(row.get("created_at")),
    )
