"""The error tree of b-durable.

Every error a user can catch derives from :class:`DurableError`. Errors cross Redis as JSON records
(``type``, ``message``, ``traceback``), never as pickles, so the classes below carry plain attributes
and can be rebuilt from such a record on the other side.
"""

from __future__ import annotations

__all__ = [
    "ChildWorkflowError",
    "DeadLetterNotFoundError",
    "DurableError",
    "EventTimeoutError",
    "InvalidInputError",
    "NonDeterminismError",
    "NonRetryableError",
    "PayloadTooLargeError",
    "TaskFailedError",
    "UnknownWorkflowError",
    "WorkflowAlreadyExistsError",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowNotFoundError",
]


class DurableError(Exception):
    """Root of every b-durable error."""


class TaskFailedError(DurableError):
    """A task exhausted its attempts (or failed without retry); raised at the workflow's ``await``."""

    def __init__(self, task_name: str, attempts: int, error_type: str, message: str) -> None:
        super().__init__(f"task {task_name!r} failed after {attempts} attempt(s): {error_type}: {message}")
        self.task_name = task_name
        self.attempts = attempts
        self.error_type = error_type
        self.message = message


class ChildWorkflowError(DurableError):
    """A child workflow started with ``ctx.execute`` failed or was cancelled."""

    def __init__(self, workflow_id: str, error_type: str, message: str) -> None:
        super().__init__(f"child workflow {workflow_id!r} failed: {error_type}: {message}")
        self.workflow_id = workflow_id
        self.error_type = error_type
        self.message = message


class WorkflowCancelledError(DurableError):
    """The workflow was cancelled; raised inside it at the ``await`` where it waits, and by ``result()``."""

    is_cancellation = True

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(f"workflow cancelled: {reason}" if reason else "workflow cancelled")
        self.reason = reason


class EventTimeoutError(DurableError):
    """``ctx.wait_for_event`` reached its timeout before the event arrived."""


class WorkflowFailedError(DurableError):
    """``result()`` of a workflow that ended ``FAILED``."""

    def __init__(self, workflow_id: str, error_type: str, message: str, traceback: str | None = None) -> None:
        super().__init__(f"workflow {workflow_id!r} failed: {error_type}: {message}")
        self.workflow_id = workflow_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback


class WorkflowNotFoundError(DurableError):
    """No workflow with that id exists (never started, or expired after its retention)."""


class DeadLetterNotFoundError(DurableError):
    """No dead-letter entry with that id (never existed, purged, or already retried or failed)."""


class WorkflowAlreadyExistsError(DurableError):
    """The workflow id is already used by a workflow of another name."""


class UnknownWorkflowError(DurableError):
    """No dispatcher has registered a workflow of that name (or that version)."""


class InvalidInputError(DurableError):
    """The input does not match the workflow's annotated input type."""


class PayloadTooLargeError(DurableError):
    """A payload is larger than ``BDURABLE_MAX_PAYLOAD``; nothing was written."""


class NonDeterminismError(DurableError):
    """A replay issued durable calls that differ from the recorded history."""


class NonRetryableError(DurableError):
    """Raise from a task to fail it at once, skipping its remaining attempts."""
