"""Running workflow steps: replay the workflow to where it waits, commit what it did.

A dispatcher keeps recently run workflows in memory (:class:`RunCache`): the claim says where its copy stopped
and brings only the newer inbox entries, so a step costs the same at step 1,000 as at step 10. Without a
current copy the run is rebuilt from the recorded history. A history that cannot be replayed fails its
workflow with a clear error rather than leaving it held, or crash-looping dispatchers.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from bdurable.clock import SYSTEM_CLOCK, Clock
from bdurable.config import Settings
from bdurable.errors import PayloadUnreadableError
from bdurable.keys import Keys
from bdurable.limits import limit_id
from bdurable.payloads import CodecUnavailableError
from bdurable.reads import Reads
from bdurable.registry import Registry
from bdurable.replay.loop import StepLoop
from bdurable.replay.run import WorkflowRun
from bdurable.runtime.metrics import Metrics
from bdurable.runtime.service import Backoff
from bdurable.services.dispatcher.commits import Committer
from bdurable.store import REDIS_ERRORS, Store
from bdurable.wire import (
    Admission,
    CallRecord,
    CommitReply,
    ErrorRecord,
    FollowingStep,
    Outcome,
    StepClaim,
    StepDocument,
    TaskClaim,
    inbox_ok,
)
from bdurable.workflow import Workflow

__all__ = ["Following", "RunCache", "StepRunner"]

T = TypeVar("T")

log = structlog.get_logger("bdurable.dispatcher")


@dataclass(frozen=True, slots=True)
class Following:
    """A step run right after its task (:meth:`StepRunner.follow`), waiting for the task's commit."""

    run: WorkflowRun
    step: FollowingStep
    began: float


class RunCache:
    """Workflow runs kept in memory between steps, least recently used first out, bounded by a count and by
    the payload bytes the runs hold (``BDURABLE_RUN_CACHE_BYTES``: payloads may be up to 1 MiB each)."""

    def __init__(self, size: int, *, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._runs: OrderedDict[str, WorkflowRun] = OrderedDict()
        self._sizes: dict[str, int] = {}

    def peek(self, workflow_id: str) -> WorkflowRun | None:
        """The cached run, left in place (and in its place in line)."""
        return self._runs.get(workflow_id)

    def take(self, workflow_id: str) -> WorkflowRun | None:
        self.bytes -= self._sizes.pop(workflow_id, 0)
        return self._runs.pop(workflow_id, None)

    def keep(self, workflow_id: str, run: WorkflowRun) -> None:
        self.take(workflow_id)
        footprint = run.footprint
        if footprint > self.max_bytes:  # larger than the whole cache: replayed from Redis next time
            run.close()
            return
        self._runs[workflow_id] = run
        self._sizes[workflow_id] = footprint
        self.bytes += footprint
        while len(self._runs) > self.size or self.bytes > self.max_bytes:
            evicted_id, evicted = self._runs.popitem(last=False)
            self.bytes -= self._sizes.pop(evicted_id, 0)
            evicted.close()

    def clear(self) -> None:
        for run in self._runs.values():
            run.close()
        self._runs.clear()
        self._sizes.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._runs)


class StepRunner:
    def __init__(
        self,
        *,
        worker_id: str,
        settings: Settings,
        registry: Registry,
        store: Store,
        reads: Reads,
        committer: Committer,
        metrics: Metrics,
        cache: RunCache,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self.registry = registry
        self.store = store
        self.reads = reads
        self.committer = committer
        self.metrics = metrics
        self.cache = cache
        self.clock = clock
        self.keys = Keys(settings.prefix, settings.shards)
        self.loop = StepLoop()
        self.retention_ms = round(settings.retention * 1000)

    def close(self) -> None:
        self.cache.clear()
        self.loop.close()

    async def run(self, claim: StepClaim) -> None:
        began = time.perf_counter()
        # Bound, not undone: every claimed item runs in its own copy of the context (WorkPool.spawn), and this
        # costs half of a `bound_contextvars` block (it saves and restores whatever was bound before).
        structlog.contextvars.bind_contextvars(workflow_id=claim.workflow_id, name=claim.name, version=claim.version)
        with self.store.tracing.step(claim) as span:
            definition = self.registry.workflow(claim.name, claim.version)
            if definition is None:  # cannot happen through version routing; never guess
                log.error("claimed a step of a version this dispatcher does not hold")
                return
            admission: Admission | StepDocument | None = None
            if definition.limit.active and claim.committed_len < 0:
                admission = await self._admit(claim, definition)
            if isinstance(admission, StepDocument):  # its key function failed: the run fails, its code never runs
                run, based_on, document = None, 0, admission
            elif admission is not None and admission.queued:  # no slot: it waits QUEUED, its code does not run
                run, based_on = None, 0
                document = StepDocument([], "QUEUED", admission.text, None, admission=admission)
            else:
                if claim.committed_len < 0:
                    self.metrics.child(self.metrics.workflows_started, claim.name).inc()
                run, document, based_on = await self._advance(claim, definition)
                if isinstance(admission, Admission):
                    document = dataclasses.replace(document, admission=admission)
            document = span.annotate(document)  # tracing: the new calls' contexts (a no-op when off)
            reply = await self.committer.commit(
                "step",
                lambda budget: self.store.commit_step(
                    self.worker_id,
                    claim.workflow_id,
                    lease=claim.lease,
                    based_on=based_on,
                    document=document,
                    retention_ms=self.retention_ms,
                    handoff=budget,
                ),
            )
            self._committed(claim.name, claim.workflow_id, run, document, reply, began)

    def follow(self, claim: TaskClaim, result: str) -> Following | None:
        """Run the workflow's next step right after its task returned ``result``, on this dispatcher's cached
        copy of the run, for the task's commit to commit it too: one script instead of the task's commit, the
        step's claim and the step's commit (``commit_task.lua`` checks that the copy was current).

        Only where nothing is lost if the step kills the process: never on a task's last attempt (the attempt is
        lost with the dispatcher and counts as failed, so a later attempt must remain; it runs on a dispatcher
        without this copy of the run and commits on its own, so a step that kills dispatchers is then found as
        usual), never for a suspect (it runs alone so that a crash is its own), a task in another shard than its
        workflow (a limited task lives in its limit's shard; one script, one shard) or with tracing on (a step's
        span continues the workflow's trace, which the task's claim does not carry); nor while the dispatcher
        drains or a suspect runs alone, as for any new work. And only when the run waits for this call alone, so
        the result is the next thing it receives.
        """
        call = claim.call
        if claim.suspect or call.attempt >= call.max_attempts or self.store.tracing.enabled:
            return None
        if claim.shard != self.keys.shard_of(claim.workflow_id):  # a limited task living in its limit's shard
            return None
        if self.committer.slots.handoff_budget() <= 0:  # draining (no new work, a step included), or a suspect runs
            return None
        run = self.cache.peek(claim.workflow_id)
        if run is None or run.outcome is not None or len(run.pending) != 1 or claim.seq not in run.pending:
            return None
        self.cache.take(claim.workflow_id)  # ours until the commit says whether it is kept
        began = time.perf_counter()
        try:
            run.feed([inbox_ok(claim.seq, result)])
            document = run.take_step()
        except Exception:  # an engine error: the step runs again from the history, where it is handled
            run.close()
            return None
        return Following(run, FollowingStep(run.delivered, document, self.retention_ms), began)

    def settle(self, claim: TaskClaim, following: Following, reply: CommitReply) -> None:
        """After the task's commit: keep the run of a step that committed with it, else drop it (the result was
        delivered as usual, and the step runs again from Redis)."""
        run = following.run
        if not reply.step_committed:
            run.close()
            return
        self.metrics.steps_with_task.inc()
        definition = run.definition
        # In the task attempt's own context, which ends with it (see `run`): the step's log lines are the step's.
        structlog.contextvars.unbind_contextvars("task", "attempt")
        structlog.contextvars.bind_contextvars(name=definition.name, version=definition.version)
        self._committed(definition.name, claim.workflow_id, run, following.step.document, reply, following.began)

    def _committed(
        self,
        name: str,
        workflow_id: str,
        run: WorkflowRun | None,
        document: StepDocument,
        reply: CommitReply,
        began: float,
    ) -> None:
        """Keep the run for the next step (or drop it), count the step, and say when the workflow ended."""
        continued = document.outcome is not None and document.outcome.status == "CONTINUED"
        if run is not None:
            structlog.contextvars.bind_contextvars(step=run.completed)  # the step's own context (see `run`)
            if reply.status == "ok" and not continued:
                self.cache.keep(workflow_id, run)
            else:
                run.close()  # finished, stale, or continued as new (the next run starts from its input)
        if continued and reply.status == "ok":
            log.info("workflow continued as new")
        self.metrics.run_cache_bytes.set(self.cache.bytes)
        self.metrics.run_cache_runs.set(len(self.cache))
        if reply.status != "stale":
            self.metrics.child(self.metrics.steps, name).inc()
            self.metrics.child(self.metrics.step_duration, name).observe(time.perf_counter() - began)
        if reply.status == "finished":
            status = document.outcome.status if document.outcome is not None else "FAILED"
            self.metrics.child(self.metrics.workflows_finished, name, status).inc()
            log.info("workflow finished", status=status)

    async def _admit(self, claim: StepClaim, definition: Workflow[Any, Any]) -> Admission | StepDocument:
        """A run of a workflow with a concurrency limit takes a slot before its first step, or queues for one.

        Asked again on every claim until the first step commits: the answer is the same (the script is
        idempotent), so a dispatcher that dies in between changes nothing. A key function that fails (or
        returns no string) fails the run, as a task's fails its call: the step that fails it is returned.
        """
        limit = definition.limit
        try:
            value = await _through_codec_outages(lambda: self.store.codec.open(claim.input))
            key = limit.key_of(definition.convert_input(value))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("the workflow's limit key function failed: failing the run", error=error)
            return _failed_before_running(exc, "the key function of its concurrency limit failed")
        ident = limit_id("w", definition.name, key)
        shard = self.keys.shard_of(ident)
        member = f"{self.keys.shard_of(claim.workflow_id)}|{claim.workflow_id}"
        backoff = Backoff(None)
        while True:
            try:
                admitted = await self.store.admit(
                    self.keys.shard(shard), limit=ident, concurrency=limit.concurrency or 1, key=key, member=member,
                    priority=claim.priority,
                )  # fmt: skip
                break
            except REDIS_ERRORS as exc:
                log.warning("admission failed, retrying", error=str(exc), retry_in=backoff.delay)
                await backoff.wait()
        text = f"a slot of {definition.name}{limit.describe(key)}"
        return Admission(ident, shard, not admitted, text)

    async def _advance(
        self, claim: StepClaim, definition: Workflow[Any, Any]
    ) -> tuple[WorkflowRun | None, StepDocument, int]:
        """Replay the run to its newest inbox entry: (the run to keep, what to commit, entries consumed)."""
        run = self.cache.take(claim.workflow_id)
        if run is not None and (claim.inbox_start < 0 or run.delivered != claim.inbox_start):
            run.close()  # our copy is not the latest committed state: rebuild
            run = None
        entries, calls = claim.entries, claim.calls
        if run is None and claim.inbox_start >= 0:
            entries, calls = await self._load_history(claim.workflow_id)
        try:
            opened = await _through_codec_outages(lambda: [self.store.codec.open_text(entry) for entry in entries])
            if run is None:
                run = await _through_codec_outages(lambda: self._rebuild(definition, claim, calls))
            run.feed(opened)
            return run, run.take_step(), run.delivered
        except Exception as exc:
            # Corrupt history (or an engine bug): fail this workflow with a clear error rather than leaving it
            # held and RUNNING forever; the others run on.
            # No exc_info: a rendered traceback may show the frames' locals, the opened payloads among them. The
            # traceback goes into the workflow's error record (in Redis, as any error's).
            log.error("cannot replay the workflow's history: failing it", error=f"{type(exc).__name__}: {exc}")
            if run is not None:
                run.close()
            consumed = len(entries) if claim.inbox_start < 0 else claim.inbox_start
            return None, _corrupt_history(exc), consumed

    def _rebuild(self, definition: Workflow[Any, Any], claim: StepClaim, calls: dict[str, str]) -> WorkflowRun:
        """A run replayed from the recorded call records (when no cached copy is current)."""
        open_text = self.store.codec.open_text
        recorded = {int(field): CallRecord.decode(open_text(raw)) for field, raw in calls.items() if field.isdigit()}
        run = WorkflowRun(
            loop=self.loop,
            definition=definition,
            workflow_id=claim.workflow_id,
            input_value=self.store.codec.open(claim.input),
            recorded=recorded,
            committed_len=claim.committed_len,
            max_payload=self.settings.max_payload,
            shard_of=self.keys.shard_of,
            seq_base=claim.seq_base,
            clock=self.clock.now,
        )
        run.footprint += len(claim.input) + sum(len(raw) for raw in calls.values())
        run.start()
        return run

    async def _load_history(self, workflow_id: str) -> tuple[list[str], dict[str, str]]:
        """Read a workflow's whole inbox and call records, through outages: the claimed step stays ours
        (leased) until we commit it."""
        backoff = Backoff(None)
        while True:
            try:
                return await self.reads.recorded(workflow_id)
            except REDIS_ERRORS as exc:
                log.warning("reading history failed, retrying", error=str(exc), retry_in=backoff.delay)
                await backoff.wait()


async def _through_codec_outages(open_payloads: Callable[[], T]) -> T:
    """``open_payloads()``, called again while the custom codec's service does not answer (a KMS outage says
    nothing about the payloads: the claimed step stays ours, leased, until it commits); any other error is
    the caller's."""
    backoff = Backoff(None)
    while True:
        try:
            return open_payloads()
        except CodecUnavailableError as exc:
            log.warning("the custom codec is unavailable, retrying", error=str(exc), retry_in=backoff.delay)
            await backoff.wait()


def _failed_before_running(exc: BaseException, why: str) -> StepDocument:
    """A first step that fails the workflow before its code runs, with the error that stopped it."""
    error = ErrorRecord(type(exc).__name__, f"{why}: {exc}", "".join(traceback.format_exception(exc)))
    return StepDocument([], "FAILED", "", Outcome("FAILED", "null", error))


def _corrupt_history(exc: BaseException) -> StepDocument:
    """A step that fails the workflow because its recorded state cannot be replayed (named by the payload error
    when a payload could not be opened: a missing key, a tampered ciphertext)."""
    error = ErrorRecord(
        type(exc).__name__ if isinstance(exc, PayloadUnreadableError) else "CorruptHistoryError",
        f"the workflow's recorded state in Redis cannot be replayed: {type(exc).__name__}: {exc}",
        "".join(traceback.format_exception(exc)),
    )
    return StepDocument([], "FAILED", "", Outcome("FAILED", "null", error))
