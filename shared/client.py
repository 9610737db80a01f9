"""The client: start workflows, inspect them, wait for their results."""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

from bdurable.codec import decode, encode_payload, loads, to_json_value
from bdurable.config import Settings
from bdurable.errors import (
    DeadLetterNotFoundError,
    DurableError,
    InvalidInputError,
    UnknownWorkflowError,
    WorkflowAlreadyExistsError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from bdurable.keys import Keys, ShardKeys
from bdurable.model import FINISHED, DeadLetter, HistoryEntry, Signal, Status, WorkflowPage, WorkflowState
from bdurable.pubsub import Subscriptions
from bdurable.store import Store
from bdurable.workflow import Workflow

__all__ = ["Client", "WorkflowHandle", "validate_workflow_id"]

MAX_ID_LENGTH = 256


def _is_text(value: object) -> bool:
    """Runtime check for callers without a type checker."""
    return isinstance(value, str) and bool(value)


def validate_workflow_id(workflow_id: str) -> str:
    if not _is_text(workflow_id):
        raise ValueError("a workflow id must be a non-empty string")
    if len(workflow_id) > MAX_ID_LENGTH:
        raise ValueError(f"a workflow id is at most {MAX_ID_LENGTH} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in workflow_id):
        raise ValueError("a workflow id may not contain control characters")
    return workflow_id


def _json_or_text(text: str | None) -> Any:
    """Decode a stored JSON value; a corrupt one is shown as its raw text rather than failing the read."""
    try:
        return decode(text)
    except ValueError:
        return text


def _ms(value: str | None) -> datetime:
    return datetime.fromtimestamp(int(value or 0) / 1000, UTC)


def state_from_hash(workflow_id: str, data: dict[str, str]) -> WorkflowState:
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
        created_at=_ms(data.get("created_at")),
        updated_at=_ms(data.get("updated_at")),
    )


class WorkflowHandle:
    """A started workflow: its id, and shortcuts to the client's calls about it."""

    def __init__(self, client: Client, workflow_id: str, status: str) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self.status = status

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.workflow_id} {self.status}>"

    async def result(self, timeout: float | None = None) -> Any:
        return await self.client.result(self.workflow_id, timeout=timeout)

    async def state(self) -> WorkflowState | None:
        return await self.client.get_state(self.workflow_id)

    async def send_event(self, name: str, payload: Any = None) -> None:
        await self.client.send_event(self.workflow_id, name, payload)

    async def cancel(self, reason: str | None = None) -> None:
        await self.client.cancel(self.workflow_id, reason=reason)


class Client:
    """Connects to Redis; use as ``async with Client(url) as client``."""

    def __init__(self, redis_url: str | None = None, *, prefix: str | None = None, settings: Settings | None = None):
        base = settings or Settings.from_env()
        self.settings = base.with_overrides(redis_url=redis_url, prefix=prefix)
        self.keys = Keys(self.settings.prefix, self.settings.shards)
        self._store: Store | None = None
        self._subscriptions: Subscriptions | None = None

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._store is None:
            store = Store.from_settings(self.settings)
            try:
                await store.initialize()
                await store.check_shards()
            except BaseException:
                await store.close()
                raise
            self._store = store

    async def close(self) -> None:
        if self._subscriptions is not None:
            await self._subscriptions.close()
            self._subscriptions = None
        if self._store is not None:
            await self._store.close()
            self._store = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the client is not connected: use `async with Client(...) as client`")
        return self._store

    # -- starting ---------------------------------------------------------------------------------------

    async def start(
        self,
        workflow: Workflow[Any, Any] | str,
        input: Any = None,
        *,
        workflow_id: str | None = None,
        version: str | None = None,
    ) -> WorkflowHandle:
        """Start a workflow (by definition or registered name); idempotent on ``workflow_id``."""
        workflow_id = validate_workflow_id(uuid.uuid4().hex if workflow_id is None else workflow_id)
        if isinstance(workflow, Workflow):
            if version is not None and version != workflow.version:
                raise ValueError(f"version {version!r} differs from the definition's {workflow.version!r}")
            name, version, queue = workflow.name, workflow.version, workflow.queue
            value = workflow.validate_input(input)
        else:
            name = workflow
            version, queue, schema = await self._resolve(name, version, workflow_id)
            value = to_json_value(input)
            if schema is not None:
                _validate_against_schema(value, schema, f"{name}@{version}")
        text = encode_payload(value, what=f"input of workflow {name}", max_bytes=self.settings.max_payload)
        shard = self.keys.for_workflow(workflow_id)
        result = await self.store.shard_script("start", shard, workflow_id, name, version, queue, text)
        if result[0] == "conflict":
            raise WorkflowAlreadyExistsError(
                f"workflow id {workflow_id!r} is already used by a workflow named {result[1]!r}"
            )
        return WorkflowHandle(self, workflow_id, Status.RUNNING if result[0] == "created" else result[1])

    async def _resolve(
        self, name: str, version: str | None, workflow_id: str
    ) -> tuple[str, str, dict[str, Any] | None]:
        """Pick the version to start by name: the one asked for, else the newest registered that is live."""
        redis = self.store.redis
        shard = self.keys.for_workflow(workflow_id)
        now = await redis.time()  # the Redis clock, like every liveness expiry (TIME cannot be pipelined on a cluster)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(self.keys.versions(name), 0, -1)
            pipe.zrange(shard.live(name), 0, -1, withscores=True)
            versions, live = await pipe.execute()
        if not versions:
            raise UnknownWorkflowError(f"no dispatcher has registered a workflow named {name!r}")
        if version is not None:
            if version not in versions:
                raise UnknownWorkflowError(
                    f"workflow {name!r} has no registered version {version!r} (registered: {', '.join(versions)})"
                )
            chosen = version
        else:
            now_ms = now[0] * 1000 + now[1] // 1000
            live_versions = {member.rpartition("|")[0] for member, expiry in live if expiry > now_ms}
            chosen = next((v for v in versions if v in live_versions), versions[0])
        entry = await redis.hget(self.keys.registry, f"{name}@{chosen}")
        info = loads(entry) if entry else {}
        return chosen, str(info.get("queue", "default")), info.get("schema")

    # -- reading ----------------------------------------------------------------------------------------

    async def get_state(self, workflow_id: str) -> WorkflowState | None:
        """The workflow's current state, or ``None`` if it is unknown or expired."""
        data: dict[str, str] = await self.store.redis.hgetall(  # type: ignore[assignment]
            self.keys.for_workflow(workflow_id).wf(workflow_id)
        )
        if not data or "name" not in data:
            return None
        return state_from_hash(workflow_id, data)

    async def _require_state(self, workflow_id: str) -> WorkflowState:
        state = await self.get_state(workflow_id)
        if state is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} (never started, or expired)")
        return state

    async def result(self, workflow_id: str, timeout: float | None = None) -> Any:
        """Wait for the workflow to finish and return its output (pub/sub, no polling)."""
        state = None
        async with self._subscriptions_ready().follow(self.keys.workflow_channel(workflow_id)) as messages:
            try:
                async with asyncio.timeout(timeout):
                    # Subscribed first, then read: a completion between the two is never missed.
                    state = await self._require_state(workflow_id)
                    while state.status not in FINISHED:
                        message = await messages.get()
                        if message is not None and message.get("status") not in FINISHED:
                            continue  # progress on the way: nothing to read yet
                        if message is not None and isinstance(message.get("output"), str):
                            # the finish carried its outcome (see publish_state in lib.lua): no read needed
                            state = dataclasses.replace(
                                state,
                                status=message["status"],
                                output=_json_or_text(message["output"]) if message["output"] else None,
                                error=_json_or_text(message["error"]) if message.get("error") else None,
                            )
                            break
                        state = await self._require_state(workflow_id)  # finished, or a reconnect: look
            except TimeoutError:
                raise TimeoutError(
                    f"workflow {workflow_id!r} did not finish within {timeout:g}s "
                    f"(status {state.status if state else 'unknown'})"
                ) from None
        return _outcome(state)

    async def watch(self, workflow_id: str) -> AsyncIterator[dict[str, Any]]:
        """Status changes (``{"status", "step", "waiting_on"}``) and signals (``{"signal": {...}}``) of one
        workflow as they happen, until it finishes. Signals come from the durable log, so none is missed."""
        shard = self.keys.for_workflow(workflow_id)
        seen_signals = 0
        last: tuple[str, int, str | None] | None = None
        async with self._subscriptions_ready().follow(self.keys.workflow_channel(workflow_id)) as messages:
            await self._require_state(workflow_id)
            while True:
                # The hash first: if it says finished, the log read after it holds every signal.
                async with self.store.redis.pipeline(transaction=False) as pipe:
                    pipe.hgetall(shard.wf(workflow_id))
                    pipe.lrange(shard.signals(workflow_id), seen_signals, -1)
                    data, fresh = await pipe.execute()
                if not data:
                    raise WorkflowNotFoundError(f"workflow {workflow_id!r} expired while being watched")
                for raw in fresh:
                    seen_signals += 1
                    yield {"signal": loads(raw)}
                state = state_from_hash(workflow_id, data)
                current = (state.status, state.step, state.waiting_on)
                if current != last:
                    last = current
                    yield {"status": state.status, "step": state.step, "waiting_on": state.waiting_on}
                if state.status in FINISHED:
                    return
                await messages.get()

    def _subscriptions_ready(self) -> Subscriptions:
        if self._subscriptions is None:
            self._subscriptions = Subscriptions(self.store.redis)
        return self._subscriptions

    async def list(
        self, status: str | None = None, name: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> WorkflowPage:
        """Workflows, newest first, optionally by status and name; pass ``next_cursor`` for the next page.

        The cursor is the position of the last item returned (created time and id), so pages neither skip
        nor repeat items when workflows start or change status meanwhile.
        """
        if status is not None and status not in Status.__members__:
            raise ValueError(f"unknown status {status!r}; use one of {', '.join(Status.__members__)}")
        if limit < 1:
            raise ValueError("limit must be >= 1")
        after: tuple[int, str] | None = None
        if cursor:
            score_text, _, member = cursor.partition(":")
            if not score_text.isdigit() or not member:
                raise ValueError(f"invalid cursor {cursor!r}")
            after = (int(score_text), member)
        found: builtins.list[tuple[int, str, ShardKeys]] = []
        statuses = [status] if status else list(Status)  # every workflow is in exactly one status index
        for shard in self.keys.all_shards():
            for each in statuses:
                found += await self._list_shard(shard, shard.index_status(each), name, limit + 1, after)
        found.sort(key=lambda item: (item[0], item[1]), reverse=True)
        page = found[:limit]
        next_cursor = f"{page[-1][0]}:{page[-1][1]}" if len(found) > limit else None
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for _, member, shard in page:
                pipe.hgetall(shard.wf(member))
            rows = await pipe.execute()
        states = [state_from_hash(member, row) for (_, member, _), row in zip(page, rows, strict=True) if row]
        return WorkflowPage(states, next_cursor)

    async def _list_shard(
        self, shard: ShardKeys, key: str, name: str | None, wanted: int, after: tuple[int, str] | None
    ) -> builtins.list[tuple[int, str, ShardKeys]]:
        """Up to ``wanted`` index entries of one shard after the cursor, newest first, filtered by name."""
        redis = self.store.redis
        max_score = str(after[0]) if after else "+inf"
        found: builtins.list[tuple[int, str, ShardKeys]] = []
        offset, batch = 0, max(wanted * 2, 50)
        while len(found) < wanted:
            page: builtins.list[tuple[str, float]] = await redis.zrevrangebyscore(  # type: ignore[assignment]
                key, max_score, "-inf", start=offset, num=batch, withscores=True
            )
            offset += len(page)
            candidates = [
                (int(score), member)
                for member, score in page
                if after is None or (int(score), member) < after  # same-ms entries: order by id
            ]
            if name is not None and candidates:
                async with redis.pipeline(transaction=False) as pipe:
                    for _, member in candidates:
                        pipe.hget(shard.wf(member), "name")
                    names = await pipe.execute()
                candidates = [c for c, n in zip(candidates, names, strict=True) if n == name]
            found += [(score, member, shard) for score, member in candidates]
            if len(page) < batch:
                break
        return found[:wanted]

    async def history(self, workflow_id: str) -> builtins.list[HistoryEntry]:
        """The recorded durable calls of a workflow, in order, with their results."""
        await self._require_state(workflow_id)
        shard = self.keys.for_workflow(workflow_id)
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(shard.calls(workflow_id))
            pipe.lrange(shard.inbox(workflow_id), 0, -1)
            calls, inbox = await pipe.execute()
        results: dict[int, Any] = {}
        for raw in inbox:
            entry = loads(raw)
            if "seq" in entry:
                results[int(entry["seq"])] = entry.get("v") if entry.get("ok") else entry.get("err")
        entries = []
        for field, raw in calls.items():
            if not field.isdigit():
                continue
            seq = int(field)
            record = loads(raw)
            if record.get("k") == "value":
                continue
            started, finished = calls.get(f"{seq}:t"), calls.get(f"{seq}:f")
            entries.append(
                HistoryEntry(
                    seq=seq,
                    kind=str(record.get("k")),
                    name=str(record.get("n")),
                    status=calls.get(f"{seq}:s", "pending"),
                    result=results.get(seq),
                    started_at=_ms(started) if started else None,
                    finished_at=_ms(finished) if finished else None,
                )
            )
        return sorted(entries, key=lambda e: e.seq)

    # -- managing ---------------------------------------------------------------------------------------

    async def resume(self, workflow_id: str) -> None:
        """Re-queue a ``VERSION_MISMATCH`` workflow once its version is deployed again."""
        shard = self.keys.for_workflow(workflow_id)
        result = await self.store.shard_script("resume", shard, workflow_id)
        if result[0] == "missing":
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} (never started, or expired)")
        if result[0] == "not_halted":
            raise DurableError(f"workflow {workflow_id!r} is {result[1]}, not VERSION_MISMATCH: nothing to resume")
        if result[0] == "still_missing":
            raise DurableError(
                f"no live dispatcher runs {result[1]} yet: deploy a dispatcher with that version, then resume"
            )

    async def send_event(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Deliver an event to one workflow; returns once the signal bus's inbound list holds it."""
        _check_event_name(name)
        text = encode_payload(payload, what=f"payload of event {name!r}", max_bytes=self.settings.max_payload)
        shard = self.keys.for_workflow(workflow_id)
        result = await self.store.shard_script("bus_send", shard, "event", workflow_id, name, text)
        if result == "missing":
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} (never started, or expired)")
        if result == "finished":
            raise WorkflowNotFoundError(f"workflow {workflow_id!r} has already finished: it takes no more events")

    async def publish_event(self, name: str, payload: Any = None, *, key: str) -> int:
        """Wake every workflow waiting on ``(name, key)``; returns how many were waiting (0: dropped)."""
        _check_event_name(name)
        if not _is_text(key):
            raise ValueError("publish_event needs a non-empty string key")
        text = encode_payload(payload, what=f"payload of event {name!r}", max_bytes=self.settings.max_payload)
        woken = 0
        for shard in self.keys.all_shards():
            woken += int(await self.store.shard_script("bus_send", shard, "publish", name, key, text))
        return woken

    async def cancel(self, workflow_id: str, *, reason: str | None = None) -> None:
        """Cancel a workflow: ``WorkflowCancelledError`` is raised inside it where it waits.

        Cancelling twice is harmless; cancelling a finished workflow raises ``DurableError`` and changes nothing.
        """
        shard = self.keys.for_workflow(workflow_id)
        result = await self.store.shard_script("bus_send", shard, "cancel", workflow_id, reason or "")
        if result == "missing":
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r} (never started, or expired)")
        if result == "finished":
            state = await self.get_state(workflow_id)
            raise DurableError(
                f"workflow {workflow_id!r} has already finished ({state.status if state else 'expired'}); "
                "nothing to cancel"
            )

    async def signals(self, workflow_id: str) -> AsyncIterator[Signal]:
        """Every signal of the workflow from the first, then live ones, each once, in order; ends when
        the workflow finishes."""
        shard = self.keys.for_workflow(workflow_id)
        seen = 0  # how many entries of the durable signal log were yielded
        async with self._subscriptions_ready().follow(self.keys.workflow_channel(workflow_id)) as messages:
            await self._require_state(workflow_id)
            while True:
                # The log is the truth; messages only say "look again". Subscribed first, so nothing slips.
                # Status first: if it says finished, the log read after it holds every signal.
                async with self.store.redis.pipeline(transaction=False) as pipe:
                    pipe.hget(shard.wf(workflow_id), "status")
                    pipe.lrange(shard.signals(workflow_id), seen, -1)
                    status, fresh = await pipe.execute()
                for raw in fresh:
                    record = loads(raw)
                    seen += 1
                    yield Signal(
                        name=record["name"],
                        payload=record.get("payload"),
                        at=_ms(str(record.get("at", 0))),
                        seq=int(record.get("seq", 0)),
                    )
                if status is None or status in FINISHED:
                    return
                await messages.get()

    # -- dead-letter queue ------------------------------------------------------------------------------

    async def dlq_list(self) -> builtins.list[DeadLetter]:
        """Every dead-letter entry, oldest first."""
        entries: builtins.list[DeadLetter] = []
        for shard in self.keys.all_shards():
            ids: builtins.list[str] = await self.store.redis.zrange(shard.dlq, 0, -1)  # type: ignore[assignment]
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for entry_id in ids:
                    pipe.hgetall(shard.dlq_entry(entry_id))
                rows = await pipe.execute()
            entries += [_dead_letter(entry_id, row) for entry_id, row in zip(ids, rows, strict=True) if row]
        return sorted(entries, key=lambda e: e.created_at)

    async def dlq_show(self, entry_id: str) -> DeadLetter:
        row: dict[str, str] = await self.store.redis.hgetall(  # type: ignore[assignment]
            self._dlq_shard(entry_id).dlq_entry(entry_id)
        )
        if not row:
            raise DeadLetterNotFoundError(f"no dead-letter entry {entry_id!r}")
        return _dead_letter(entry_id, row)

    async def dlq_retry(self, entry_id: str) -> None:
        """Run a parked task again; the workflow continues with its result."""
        await self._dlq_resolve(entry_id, "retry")

    async def dlq_fail(self, entry_id: str) -> None:
        """Give up on a parked task; the workflow receives ``TaskFailedError``."""
        await self._dlq_resolve(entry_id, "fail")

    async def dlq_purge(self) -> int:
        """Remove every entry no workflow is parked on; returns how many."""
        removed = 0
        for shard in self.keys.all_shards():
            removed += int(await self.store.shard_script("dlq_purge", shard))
        return removed

    async def _dlq_resolve(self, entry_id: str, action: str) -> None:
        result = await self.store.shard_script("dlq_resolve", self._dlq_shard(entry_id), entry_id, action)
        if result[0] == "missing":
            raise DeadLetterNotFoundError(f"no dead-letter entry {entry_id!r}")
        if result[0] == "not_parked":
            raise DurableError(f"cannot {action} dead-letter entry {entry_id!r}: {result[1]}")

    def _dlq_shard(self, entry_id: str) -> ShardKeys:
        shard_text, _, number = entry_id.partition("-")
        if not shard_text.isdigit() or not number.isdigit() or int(shard_text) >= self.keys.shards:
            raise DeadLetterNotFoundError(f"no dead-letter entry {entry_id!r}")
        return self.keys.shard(int(shard_text))


def _validate_against_schema(value: Any, schema: dict[str, Any], what: str) -> None:
    """Validate a start by name against the registered JSON Schema, fetching nothing.

    The schema is data read from Redis: an empty ``referencing.Registry`` keeps a remote ``$ref`` from
    turning validation into an HTTP request (local ``#/$defs`` references still resolve).
    """
    try:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class(schema, registry=referencing.Registry()).validate(value)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "input"
        message = exc.message
        if len(message) > 300:  # the message quotes the value: never echo a huge payload back
            message = f"the value (too long to show) fails {exc.validator!r}: {exc.validator_value!r}"[:300]
        raise InvalidInputError(f"input of {what} is invalid at {where}: {message}") from None
    except (jsonschema.SchemaError, referencing.exceptions.Unresolvable) as exc:
        raise DurableError(f"the registered input schema of {what} is unusable: {exc}") from None


def _check_event_name(name: str) -> None:
    if not _is_text(name) or "\n" in name or "\t" in name:
        raise ValueError(f"invalid event name {name!r}: a non-empty string without tabs or newlines")


def _dead_letter(entry_id: str, row: dict[str, str]) -> DeadLetter:
    return DeadLetter(
        entry_id=entry_id,
        workflow_id=row.get("workflow_id", ""),
        task=row.get("task", ""),
        args=decode(row.get("args")),
        error=decode(row.get("error")),
        attempts=int(row.get("attempts") or 0),
        parked=row.get("parked") == "1",
        created_at=_ms(row.get("created_at")),
    )


def _outcome(state: WorkflowState) -> Any:
    error = state.error or {}
    if state.status == Status.COMPLETED:
        return state.output
    if state.status == Status.CANCELLED:
        raise WorkflowCancelledError(error.get("reason"))
    raise WorkflowFailedError(
        state.workflow_id,
        str(error.get("type", "Error")),
        str(error.get("message", "")),
        error.get("traceback"),
    )
