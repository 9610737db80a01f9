"""The client: start workflows, inspect them, wait for their results, act on them.

Writes go through :mod:`bdurable.store` (one script each), reads through :mod:`bdurable.reads`, waits through
:mod:`bdurable.pubsub` (one shared subscription connection, never polling, never missing a finish).
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import functools
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bdurable.clock import SYSTEM_CLOCK, Clock
from bdurable.codec import encode_payload, to_json_value
from bdurable.config import Settings
from bdurable.durations import aware_ms, parse_duration
from bdurable.errors import (
    DeadLetterNotFoundError,
    DeadLetterNotParkedError,
    FinishedWorkflowNotFoundError,
    InvalidInputError,
    ResultTimeoutError,
    UnknownWorkflowError,
    VersionNotLiveError,
    WorkflowAlreadyExistsError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
    WorkflowNotHaltedError,
)
from bdurable.finish_waits import FinishWaits, LastSeen
from bdurable.keys import Keys, ShardKeys
from bdurable.model import FINISHED, DeadLetter, HistoryEntry, Signal, Status, WorkflowPage, WorkflowState
from bdurable.pubsub import Subscriptions
from bdurable.reads import ListQuery, Reads, ms, outcome_from_message, state_from_hash
from bdurable.scheduling import ScheduleMethods
from bdurable.schema import validate_against_schema
from bdurable.store import REDIS_ERRORS, StartRequest, Store
from bdurable.task import Task
from bdurable.wire import StartReply
from bdurable.workflow import Workflow

__all__ = ["Client", "WorkflowHandle", "validate_workflow_id"]

T = TypeVar("T")

MAX_ID_LENGTH = 256
MAX_REASON_LENGTH = 10_000  # a cancel's reason: a sentence for people, never a payload
PRIORITY_RANGE = range(-1000, 1001)  # the ready queues' score keeps priorities within this range exact


def new_workflow_ids(count: int) -> list[str]:
    """``count`` random workflow ids, each the hex of a version-4 UUID (as ``uuid.uuid4().hex``), drawn from
    the OS in one call: ``start_many`` of thousands would otherwise spend a fifth of its time making ids."""
    raw = bytearray(os.urandom(16 * count))
    for at in range(0, 16 * count, 16):
        raw[at + 6] = raw[at + 6] & 0x0F | 0x40  # version 4
        raw[at + 8] = raw[at + 8] & 0x3F | 0x80  # RFC 4122 variant
    text = raw.hex()
    return [text[at : at + 32] for at in range(0, 32 * count, 32)]


def validate_workflow_id(workflow_id: str) -> str:
    """A workflow id is 1 to 256 characters, none of them a control character; anything else is refused.

    Any other character is fine (``:``, ``|``, ``{``, ``}``, spaces, any Unicode): the key schema keeps every
    id to its own keys (see :mod:`bdurable.keys`).
    """
    if not isinstance(workflow_id, str):
        raise InvalidInputError(f"a workflow id must be a string, not {type(workflow_id).__name__}")
    if not workflow_id:
        raise InvalidInputError("a workflow id must not be empty")
    if len(workflow_id) > MAX_ID_LENGTH:
        raise InvalidInputError(f"a workflow id is at most {MAX_ID_LENGTH} characters (got {len(workflow_id)})")
    if _CONTROL_CHARACTER.search(workflow_id):
        raise InvalidInputError("a workflow id may not contain control characters")
    if _LONE_SURROGATE.search(workflow_id):  # Redis keys are UTF-8: such an id would alias another one
        raise InvalidInputError("a workflow id must be valid Unicode text (it holds a lone surrogate)")
    return workflow_id


_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _not_found(workflow_id: str) -> WorkflowNotFoundError:
    return WorkflowNotFoundError(f"no workflow with id {workflow_id!r} (never started, or expired)")


class WorkflowHandle:
    """A started workflow: its id, and shortcuts to the client's calls about it."""

    def __init__(
        self, client: Client, workflow_id: str, status: str, definition: Workflow[Any, Any] | None = None
    ) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self.status = status
        self._definition = definition  # started by definition: its output comes back as the annotated type

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.workflow_id} {self.status}>"

    async def result(self, timeout: float | None = None) -> Any:
        """The output, as ``client.result``; started with the workflow object, converted to its return
        annotation (a dataclass, a model...), as a parent receives a child's output."""
        output = await self.client.result(self.workflow_id, timeout=timeout)
        return output if self._definition is None else self._definition.convert_output(output)

    async def state(self) -> WorkflowState | None:
        return await self.client.get_state(self.workflow_id)

    async def send_event(self, name: str, payload: Any = None) -> None:
        await self.client.send_event(self.workflow_id, name, payload)

    async def cancel(self, reason: str | None = None) -> None:
        await self.client.cancel(self.workflow_id, reason=reason)


class Client(ScheduleMethods):
    """Connects to Redis; use as ``async with Client(url) as client``."""

    def __init__(self, redis_url: str | None = None, *, prefix: str | None = None, settings: Settings | None = None):
        base = settings or Settings.from_env()
        self.settings = base.with_overrides(redis_url=redis_url, prefix=prefix)
        self.keys = Keys(self.settings.prefix, self.settings.shards)
        self._store: Store | None = None
        self._reads: Reads | None = None
        self._clock: Clock = SYSTEM_CLOCK  # bdurable.testing's environment gives its client its test clock
        self._subscriptions: Subscriptions | None = None
        self._finish_waits = FinishWaits(self._await_finish)

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._store is None:
            store = await Store.connected(self.settings, clock=self._clock)
            self._store, self._reads = store, Reads(store.redis, self.keys, store.codec, clock=self._clock)

    async def close(self) -> None:
        self._finish_waits.cancel_all()
        if self._subscriptions is not None:
            await self._subscriptions.close()
            self._subscriptions = None
        if self._store is not None:
            await self._store.close()
            self._store, self._reads = None, None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the client is not connected: use `async with Client(...) as client`")
        return self._store

    @property
    def reads(self) -> Reads:
        if self._reads is None:
            raise RuntimeError("the client is not connected: use `async with Client(...) as client`")
        return self._reads

    # -- starting ---------------------------------------------------------------------------------------

    async def start(
        self,
        workflow: Workflow[Any, Any] | str,
        input: Any = None,
        *,
        workflow_id: str | None = None,
        version: str | None = None,
        priority: int = 0,
        start_delay: str | float | timedelta | None = None,
        start_at: datetime | None = None,
    ) -> WorkflowHandle:
        """Start a workflow (by definition or registered name); idempotent on ``workflow_id``.

        ``priority`` (-1000 to 1000, default 0): higher runs first within its queue, for the run's steps and
        tasks alike (see docs/programming-model.md, "Order of work"). ``start_delay`` (a duration) or
        ``start_at`` (an aware datetime) delay the start: the workflow is ``SCHEDULED`` until then.
        """
        workflow_id = validate_workflow_id(uuid.uuid4().hex if workflow_id is None else workflow_id)
        _check_priority(priority)
        start_at_ms = await self._start_at_ms(start_delay, start_at)
        target = await self._start_target(workflow, version, workflow_id)
        text = target.encode(input, self.settings.max_payload)
        with self.store.tracing.start_workflow(target.name, workflow_id, target.version) as span:
            reply = await self.store.start(
                workflow_id, name=target.name, version=target.version, queue=target.queue, input=text,
                priority=priority, start_at_ms=start_at_ms, trace=span.traceparent,
            )  # fmt: skip
        if reply.outcome == "conflict":
            raise WorkflowAlreadyExistsError(
                f"workflow id {workflow_id!r} is already used by a workflow named {reply.detail!r}"
            )
        return WorkflowHandle(self, workflow_id, reply.detail, target.definition)

    async def start_many(
        self,
        workflow: Workflow[Any, Any] | str,
        inputs: Iterable[Any],
        *,
        workflow_ids: Iterable[str] | None = None,
        version: str | None = None,
        priority: int = 0,
    ) -> builtins.list[WorkflowHandle]:
        """Start one run per input, pipelined: thousands of starts in a few round trips (``start`` waits for
        each). Every input is validated before anything is written. Each start is its own atomic transition
        and idempotent on its id, like ``start``; an id already used by another workflow's name raises
        ``WorkflowAlreadyExistsError`` naming it, after the others were started.
        """
        values = builtins.list(inputs)
        if workflow_ids is None:
            ids = new_workflow_ids(len(values))
        else:
            ids = [validate_workflow_id(workflow_id) for workflow_id in workflow_ids]
            if len(ids) != len(values):
                raise InvalidInputError(f"{len(ids)} workflow ids for {len(values)} inputs")
            if len(set(ids)) != len(ids):
                raise InvalidInputError("workflow_ids must be distinct")
        _check_priority(priority)
        if not values:
            return []
        target = await self._start_target(workflow, version, ids[0])
        requests = [
            StartRequest(workflow_id, target.name, target.version, target.queue,
                         target.encode(value, self.settings.max_payload), priority)
            for workflow_id, value in zip(ids, values, strict=True)
        ]  # fmt: skip
        by_shard: dict[int, builtins.list[StartRequest]] = {}
        for request in requests:
            by_shard.setdefault(self.keys.shard_of(request.workflow_id), []).append(request)
        batches = [
            (number, shard_requests[first : first + START_BATCH])
            for number, shard_requests in by_shard.items()
            for first in range(0, len(shard_requests), START_BATCH)
        ]
        # Pipelined, a group of batches at a time: while Redis runs one group, the next is packed and sent.
        sending: builtins.list[asyncio.Future[builtins.list[StartReply]]] = []
        for index, (number, batch) in enumerate(batches, start=1):
            sending.append(asyncio.ensure_future(self.store.start_batch(self.keys.shard(number), batch)))
            if index % START_GROUP == 0:
                await asyncio.sleep(0)  # this group goes out as one pipeline (one per node on a cluster)
        replies = await asyncio.gather(*sending)
        outcome = {
            request.workflow_id: reply
            for (_, batch), batch_replies in zip(batches, replies, strict=True)
            for request, reply in zip(batch, batch_replies, strict=True)
        }
        conflicts = [i for i in ids if outcome[i].outcome == "conflict"]
        if conflicts:
            shown = ", ".join(repr(c) for c in conflicts[:5]) + (" ..." if len(conflicts) > 5 else "")
            raise WorkflowAlreadyExistsError(
                f"{len(conflicts)} workflow id(s) already used by another workflow: {shown} (the others started)"
            )
        return [WorkflowHandle(self, i, outcome[i].detail, target.definition) for i in ids]

    async def _start_target(self, workflow: Workflow[Any, Any] | str, version: str | None, workflow_id: str) -> _Target:
        """What a start by definition or by registered name runs: name, version, queue, and how to validate."""
        if isinstance(workflow, Workflow):
            if version is not None and version != workflow.version:
                raise InvalidInputError(f"version {version!r} differs from the definition's {workflow.version!r}")
            return _Target(workflow.name, workflow.version, workflow.queue, definition=workflow)
        given: object = workflow  # callers may pass anything: a task, a plain function, None
        if not isinstance(given, str):
            raise TypeError(f"start takes a @workflow (or a workflow's name), not {_kind_of(given)}")
        registration = await self.reads.registration(workflow, version, workflow_id)
        if registration is None:
            raise await self._unknown(workflow, version)
        return _Target(workflow, registration.version, registration.queue, schema=registration.schema)

    async def _start_at_ms(self, delay: str | float | timedelta | None, at: datetime | None) -> int:
        """When a delayed start is due (ms, by the engine's clock), or 0 to start now."""
        if delay is not None and at is not None:
            raise InvalidInputError("give start_delay or start_at, not both")
        if at is not None:
            return _ms_of(at, "start_at") or 0
        if delay is None:
            return 0
        try:
            seconds = parse_duration(delay)
        except ValueError as exc:
            raise InvalidInputError(f"start_delay: {exc}") from None
        return await self.reads.now_ms() + round(seconds * 1000) if seconds > 0 else 0

    async def _unknown(self, name: str, version: str | None) -> UnknownWorkflowError:
        versions = await self.reads.registered_versions(name)
        if not versions:
            return UnknownWorkflowError(f"no dispatcher has registered a workflow named {name!r}")
        return UnknownWorkflowError(
            f"workflow {name!r} has no registered version {version!r} (registered: {', '.join(versions)})"
        )

    # -- reading ----------------------------------------------------------------------------------------

    async def get_state(self, workflow_id: str) -> WorkflowState | None:
        """The workflow's current state, or ``None`` if it is unknown or expired."""
        return await self.reads.state(validate_workflow_id(workflow_id))

    async def _require_state(self, workflow_id: str, *, strict: bool = False, with_input: bool = True) -> WorkflowState:
        state = await self.reads.state(validate_workflow_id(workflow_id), strict=strict, with_input=with_input)
        if state is None:
            raise _not_found(workflow_id)
        return state

    async def result(self, workflow_id: str, timeout: float | None = None) -> Any:
        """Wait for the workflow to finish and return its output (pub/sub, no polling).

        Never misses the finish: the subscription is confirmed before the first read, and the waiter looks
        again after every reconnection and on a slow timer (see :mod:`bdurable.pubsub`). A Redis outage
        while waiting (a restart, a failover), even one that begins before the first read, is ridden out:
        the wait goes on once Redis answers again, bounded only by ``timeout``. Concurrent calls for one
        workflow share one wait (:mod:`bdurable.finish_waits`), each with its own timeout.

        The output is the value itself, never a placeholder: without the key it was encrypted with (or after
        tampering) this raises ``EncryptionKeyMissingError`` (or ``PayloadIntegrityError``), where the views
        (``get_state``, ``history``...) show ``"<encrypted>"``.
        """
        validate_workflow_id(workflow_id)
        if timeout is not None and not timeout > 0:  # 0: one look, no wait (a negative or NaN one is a mistake)
            return await self._result_now(workflow_id, timeout)
        async with self._finish_waits.join(workflow_id) as shared:  # concurrent calls of one workflow share it
            try:
                async with asyncio.timeout(timeout):
                    return _outcome(await shared.finished())
            except TimeoutError:
                if shared.task.done() and not shared.task.cancelled() and shared.task.exception() is None:
                    return _outcome(shared.task.result())  # the finish came with the timeout: it is there
                seen = shared.seen.status
                status = f"last read {seen}" if seen else "never read: Redis did not answer"
                raise ResultTimeoutError(
                    f"workflow {workflow_id!r} did not finish within {timeout:g}s ({status})", seen or None
                ) from None

    async def _result_now(self, workflow_id: str, timeout: float) -> Any:
        """``result(timeout=0)``: the output if the workflow has finished, else ``ResultTimeoutError`` at once."""
        if timeout != 0:
            raise InvalidInputError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
        state = await self._require_state(workflow_id, strict=True, with_input=False)
        if state.status in FINISHED:
            return _outcome(state)
        raise ResultTimeoutError(f"workflow {workflow_id!r} has not finished (read {state.status})", state.status)

    async def _await_finish(self, workflow_id: str, seen: LastSeen) -> WorkflowState:
        """The wait that concurrent ``result()`` calls of the workflow share (``bdurable.finish_waits``)."""
        delay = 0.05
        while True:
            try:
                return await self._wait_for_finish(workflow_id, seen)
            except REDIS_ERRORS:
                await asyncio.sleep(delay)  # subscribing or the first read met an outage: again
                delay = min(delay * 2, 1.0)

    async def _wait_for_finish(self, workflow_id: str, seen: LastSeen) -> WorkflowState:
        async with self._subscriptions_ready().follow(self.keys.workflow_channel(workflow_id)) as waiter:
            state = seen.note(await self._require_state(workflow_id, strict=True, with_input=False))
            while state.status not in FINISHED:
                message = await waiter.next()
                if message is not None and message.get("status") not in FINISHED:
                    if isinstance(message.get("status"), str):
                        seen.status = message["status"]  # what a timeout's message names
                    continue  # progress on the way: nothing to read yet
                if message is not None and isinstance(message.get("output"), str):
                    # the finish carried its outcome
                    return outcome_from_message(state, message, self.store.codec, strict=True)
                read = functools.partial(self._require_state, workflow_id, strict=True, with_input=False)
                state = seen.note(await self._riding_out(read))
        return state

    async def _riding_out(self, read: Callable[[], Awaitable[T]]) -> T:
        """A read made while waiting: through a Redis outage it is retried (the caller's timeout bounds it)."""
        delay = 0.05
        while True:
            try:
                return await read()
            except REDIS_ERRORS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def watch(self, workflow_id: str) -> AsyncIterator[dict[str, Any]]:
        """Status changes (``{"status", "step", "waiting_on"}``) and signals (``{"signal": {...}}``) of one
        workflow as they happen, until it finishes. Signals come from the durable log, so none is missed."""
        seen_signals = 0
        last: tuple[str, int, str | None] | None = None
        async with self._subscriptions_ready().follow(self.keys.workflow_channel(workflow_id)) as waiter:
            await self._require_state(workflow_id, with_input=False)  # it exists (raises if not)
            while True:
                read = functools.partial(self.store.read_signals, workflow_id, seen_signals, full=True)
                snapshot = await self._riding_out(read)
                if "name" not in snapshot.state:
                    raise WorkflowNotFoundError(f"workflow {workflow_id!r} expired while being watched")
                state = state_from_hash(workflow_id, snapshot.state, self.reads.codec)
                seen_signals = snapshot.next_seen
                for record in snapshot.signals:
                    yield {"signal": {"seq": record.seq, "name": record.name, "payload": record.payload,
                                      "at": record.at_ms}}  # fmt: skip
                current = (state.status, state.step, state.waiting_on)
                if current != last:
                    last = current
                    yield {"status": state.status, "step": state.step, "waiting_on": state.waiting_on}
                if state.status in FINISHED:
                    return
                await waiter.next()

    async def signals(self, workflow_id: str) -> AsyncIterator[Signal]:
        """Every signal of the workflow from the first, then live ones, each once, in order; ends when
        the workflow finishes."""
        seen = 0  # how many signals of the durable log (over all runs) were read
        async with self._subscriptions_ready().follow(self.keys.workflow_channel(workflow_id)) as waiter:
            await self._require_state(workflow_id, with_input=False)  # it exists (raises if not)
            while True:
                # The log is the truth; messages only say "look again". Subscribed first, so nothing slips.
                read = functools.partial(self.store.read_signals, workflow_id, seen, full=False)
                found = await self._riding_out(read)
                seen = found.next_seen
                for record in found.signals:
                    yield Signal(name=record.name, payload=record.payload, at=ms(record.at_ms), seq=record.seq)
                status = found.state.get("status")
                if status is None:  # gone (expired, or Redis lost it): not a finish, which a caller could not tell
                    raise WorkflowNotFoundError(f"workflow {workflow_id!r} expired while its signals were followed")
                if status in FINISHED:
                    return
                await waiter.next()

    def _subscriptions_ready(self) -> Subscriptions:
        if self._subscriptions is None:
            self._subscriptions = Subscriptions(self.store.pubsub, self.keys.keepalive_channel)
        return self._subscriptions

    async def list(
        self,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        *,
        version: str | None = None,
        prefix: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> WorkflowPage:
        """Workflows, newest first, filtered by status, name, version and creation time; pass ``next_cursor`` for
        the next page. With an id ``prefix``, the page is ordered by id instead. Every filter reads an index:
        a list is as fast with a million finished workflows as with ten."""
        query = ListQuery(
            status=status, name=name, version=version, prefix=prefix, since_ms=_ms_of(since, "since"),
            until_ms=_ms_of(until, "until"), limit=limit, cursor=cursor,
        )  # fmt: skip
        return await self.reads.page(query)

    async def history(self, workflow_id: str) -> builtins.list[HistoryEntry]:
        """The recorded durable calls of a workflow, in order, with their results."""
        await self._require_state(workflow_id, with_input=False)  # it exists (raises if not)
        return await self.reads.history(workflow_id)

    # -- managing ---------------------------------------------------------------------------------------

    async def resume(self, workflow_id: str) -> None:
        """Re-queue a ``VERSION_MISMATCH`` workflow once its version is deployed again."""
        verdict = await self.store.resume(workflow_id)
        if verdict.word == "missing":
            raise _not_found(workflow_id)
        if verdict.word == "not_halted":
            raise WorkflowNotHaltedError(
                f"workflow {workflow_id!r} is {verdict.detail}, not VERSION_MISMATCH: nothing to resume"
            )
        if verdict.word == "still_missing":
            raise VersionNotLiveError(
                f"no live dispatcher runs {verdict.detail} yet: deploy a dispatcher with that version, then resume"
            )

    async def send_event(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """Send an event to one workflow; returns once it is durably accepted (the signal bus delivers it
        when the workflow waits for it)."""
        _check_event_name(name)
        text = encode_payload(payload, what=f"payload of event {name!r}", max_bytes=self.settings.max_payload)
        with self.store.tracing.send_event(workflow_id, name) as span:
            verdict = await self.store.send_event(validate_workflow_id(workflow_id), name, text)
            span.link(verdict.detail)  # the event, in the sender's trace, points at the workflow's
        if verdict.word == "missing":
            raise _not_found(workflow_id)
        if verdict.word == "finished":
            raise FinishedWorkflowNotFoundError(
                f"workflow {workflow_id!r} has already finished: it takes no more events"
            )

    async def publish_event(self, name: str, payload: Any = None, *, key: str) -> int:
        """Wake every workflow waiting on ``(name, key)``; returns how many were waiting (0: dropped)."""
        _check_event_name(name)
        if not _is_text(key):
            raise InvalidInputError("publish_event needs a non-empty string key")
        text = encode_payload(payload, what=f"payload of event {name!r}", max_bytes=self.settings.max_payload)
        woken = 0
        with self.store.tracing.publish_event(name):
            for shard in self.keys.all_shards():
                woken += await self.store.publish_event(shard, name, key, text)
        return woken

    async def cancel(self, workflow_id: str, *, reason: str | None = None) -> None:
        """Cancel a workflow: ``WorkflowCancelledError`` is raised inside it where it waits.

        Cancelling twice is harmless; cancelling a finished workflow raises ``WorkflowFinishedError`` and
        changes nothing.
        """
        if reason is not None and len(str(reason)) > MAX_REASON_LENGTH:
            raise InvalidInputError(
                f"a cancel reason is text of at most {MAX_REASON_LENGTH:,} characters (it is kept in the workflow's "
                "state and raised inside it)"
            )
        verdict = await self.store.cancel(validate_workflow_id(workflow_id), reason or "")
        if verdict.word == "missing":
            raise _not_found(workflow_id)
        if verdict.word == "finished":
            status = await self.reads.status(workflow_id)
            raise WorkflowFinishedError(
                f"workflow {workflow_id!r} has already finished ({status or 'expired'}); nothing to cancel"
            )

    # -- dead-letter queue ------------------------------------------------------------------------------

    async def dlq_list(self) -> builtins.list[DeadLetter]:
        """Every dead-letter entry, oldest first."""
        return await self.reads.dead_letters()

    async def dlq_show(self, entry_id: str) -> DeadLetter:
        entry = await self.reads.dead_letter(self._dlq_shard(entry_id), entry_id)
        if entry is None:
            raise DeadLetterNotFoundError(f"no dead-letter entry {entry_id!r}")
        return entry

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
            removed += await self.store.dlq_purge(shard)
        return removed

    async def _dlq_resolve(self, entry_id: str, action: str) -> None:
        verdict = await self.store.dlq_resolve(self._dlq_shard(entry_id), entry_id, action)
        if verdict.word == "missing":
            raise DeadLetterNotFoundError(f"no dead-letter entry {entry_id!r}")
        if verdict.word == "not_parked":
            raise DeadLetterNotParkedError(f"cannot {action} dead-letter entry {entry_id!r}: {verdict.detail}")

    def _dlq_shard(self, entry_id: str) -> ShardKeys:
        shard_text, _, number = entry_id.partition("-")
        if not shard_text.isdigit() or not number.isdigit() or int(shard_text) >= self.keys.shards:
            raise DeadLetterNotFoundError(f"no dead-letter entry {entry_id!r}")
        return self.keys.shard(int(shard_text))


START_BATCH = 100  # workflows per script call of start_many: each call stays short (about a millisecond)
START_GROUP = 4  # script calls of start_many per pipeline (so that packing the next overlaps Redis running this)


@dataclasses.dataclass(frozen=True, slots=True)
class _Target:
    """A start's workflow, resolved: by its definition (typed input) or by name (a registered JSON Schema)."""

    name: str
    version: str
    queue: str
    definition: Workflow[Any, Any] | None = None
    schema: dict[str, Any] | None = None

    def encode(self, input: Any, max_bytes: int) -> str:
        """The input validated and encoded as a payload (``InvalidInputError``, ``PayloadTooLargeError``)."""
        if self.definition is not None:
            value = self.definition.validate_input(input)
        else:
            value = to_json_value(input)
            if self.schema is not None:
                validate_against_schema(value, self.schema, f"{self.name}@{self.version}")
        return encode_payload(value, what=f"input of workflow {self.name}", max_bytes=max_bytes, json_ready=True)


def _kind_of(value: object) -> str:
    if isinstance(value, Task):
        return f"the task {value.name!r} (a task runs inside a workflow)"
    return f"{type(value).__name__} {value!r}"


def _check_priority(priority: object) -> None:
    if not _is_int(priority) or priority not in PRIORITY_RANGE:
        raise InvalidInputError(f"priority must be an integer from -1000 to 1000, not {priority!r}")


def _ms_of(moment: datetime | None, what: str) -> int | None:
    return None if moment is None else aware_ms(moment, what)


def _is_text(value: object) -> bool:
    """Runtime check for callers without a type checker."""
    return isinstance(value, str) and bool(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_event_name(name: str) -> None:
    if not _is_text(name) or "\n" in name or "\t" in name:
        raise InvalidInputError(f"invalid event name {name!r}: a non-empty string without tabs or newlines")


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
