"""Running task attempts: run the function, ask the retry policy what a failure means, commit the outcome.

A task whose call is released while it runs (its workflow was cancelled or ended) is told so on the cancel
channel and cancelled here; its result is discarded.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Any

import anyio
import structlog

from bdurable.config import Settings
from bdurable.keys import Keys
from bdurable.registry import Registry
from bdurable.retry import RetryPolicy
from bdurable.runtime.metrics import Metrics
from bdurable.runtime.service import Stopping
from bdurable.services.dispatcher.attempts import Attempt, run_attempt
from bdurable.services.dispatcher.commits import Committer
from bdurable.services.dispatcher.steps import StepRunner
from bdurable.store import REDIS_ERRORS, Store
from bdurable.wire import ErrorRecord, TaskClaim, call_ref

__all__ = ["TaskRunner"]

log = structlog.get_logger("bdurable.dispatcher")


class TaskRunner:
    def __init__(
        self,
        *,
        worker_id: str,
        settings: Settings,
        registry: Registry,
        store: Store,
        committer: Committer,
        metrics: Metrics,
        steps: StepRunner,
        threads: int,
    ) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self.registry = registry
        self.store = store
        self.committer = committer
        self.metrics = metrics
        self.steps = steps  # runs the workflow's next step right after a task, to commit with it (follow)
        self.keys = Keys(settings.prefix, settings.shards)
        # Plain `def` tasks run in worker threads: as many as the dispatcher runs items at once.
        self.threads = anyio.CapacityLimiter(threads)
        self.running: dict[str, asyncio.Task[Any]] = {}  # call reference -> the handler running it
        self.released: set[str] = set()  # running calls whose cancel hint arrived

    async def run(self, claim: TaskClaim) -> None:
        call = claim.call
        # Bound, not undone: the attempt runs in its own copy of the context (WorkPool.spawn).
        structlog.contextvars.bind_contextvars(
            workflow_id=claim.workflow_id, **call.origin, task=call.name, attempt=call.attempt
        )
        with self.store.tracing.attempt(claim) as span:
            began = time.perf_counter()
            attempt = await self._attempt(claim)
            policy = RetryPolicy(call.max_attempts, call.backoff_ms)
            if attempt.ok:
                outcome, payload, delay = "ok", attempt.result or "null", None
            else:
                delay = policy.delay_after(call.attempt, retryable=attempt.retryable)
                outcome = "retry" if delay is not None else "fail"
                payload = (attempt.error or ErrorRecord("Error", "")).encode()
                span.failed(attempt.error or ErrorRecord("Error", ""), retryable=outcome == "retry")
                log.warning(
                    "task attempt failed", outcome=outcome, error=attempt.error.message if attempt.error else ""
                )
            self.metrics.child(self.metrics.task_duration, call.name).observe(time.perf_counter() - began)
            self.metrics.child(self.metrics.task_attempts, call.name, outcome).inc()
            following = self.steps.follow(claim, payload) if outcome == "ok" else None
            try:
                reply = await self.committer.commit(
                    "task",
                    lambda budget: self.store.commit_task(
                        self.worker_id,
                        claim,
                        outcome=outcome,
                        payload=payload,
                        delay_ms=delay or 0,
                        handoff=budget,
                        following=following.step if following is not None else None,
                    ),
                )
            except BaseException:  # cancelled by a drain that timed out: the step's run is dropped, not cached
                if following is not None:
                    following.run.close()
                raise
            if following is not None:
                self.steps.settle(claim, following, reply)
            if reply.status == "dead":
                self.metrics.child(self.metrics.dead_lettered, call.name).inc()
                log.error("task dead-lettered", task=call.name, attempts=call.attempt, entry=reply.dead_letter)

    async def _attempt(self, claim: TaskClaim) -> Attempt:
        key = call_ref(claim.workflow_id, claim.seq)
        handler = asyncio.current_task()
        assert handler is not None
        self.running[key] = handler
        try:
            return await run_attempt(
                self.registry.task(claim.call.name), claim.call, max_payload=self.settings.max_payload,
                threads=self.threads, codec=self.store.codec,
            )  # fmt: skip
        except asyncio.CancelledError:
            if key not in self.released:
                raise  # this handler itself is being cancelled (drain timeout): the work is handed back
            handler.uncancel()  # a cancel hint stopped the task: its call was released; report and go on
            return Attempt(error=ErrorRecord("CancelledError", "released"), retryable=False)
        finally:
            self.running.pop(key, None)
            self.released.discard(key)

    async def cancel_hints(self, stopping: Stopping) -> None:
        """Stop running tasks whose call was released (workflow cancelled or ended); results are discarded."""
        while not stopping.is_set:
            pubsub = self.store.pubsub()
            try:
                await pubsub.subscribe(self.keys.cancel_channel)
                while not stopping.is_set:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._cancel(str(message["data"]))
            except REDIS_ERRORS:
                await stopping.sleep(0.5)
            finally:
                with suppress(Exception):
                    await pubsub.aclose()

    def _cancel(self, key: str) -> None:
        running = self.running.get(key)
        if running is not None:
            self.released.add(key)
            log.info("cancelling a running task: its call was released", call=key)
            running.cancel()
