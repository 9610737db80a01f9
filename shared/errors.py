"""The error tree of b-durable.

Every error a user can catch derives from :class:`DurableError`. Errors cross Redis as JSON records
(``type``, ``message``, ``traceback``), never as pickles, so the classes below carry plain attributes
and can be rebuilt from such a record on the other side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ChildWorkflowError",
    "DeadLetterNotFoundError",
    "DeadLetterNotParkedError",
    "DurableError",
    "EncryptionKeyMissingError",
    "EventTimeoutError",
    "InvalidInputError",
    "NonDeterminismError",
    "NonRetryableError",
    "PayloadIntegrityError",
    "PayloadTooLargeError",
    "PayloadUnreadableError",
    "RegistrationError",
    "ReplicationError",
    "ResultTimeoutError",
    "ScheduleAlreadyExistsError",
    "ScheduleNotFoundError",
    "TaskFailedError",
    "UnknownWorkflowError",
    "VersionNotLiveError",
    "WorkflowAlreadyExistsError",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowFinishedError",
    "WorkflowNotFoundError",
    "WorkflowNotHaltedError",
    "WorkflowTimerError",
]


class DurableError(Exception):
    """Root of every b-durable error.

    ``is_cancellation`` is ``False`` on every error but :class:`WorkflowCancelledError`, so workflow code can
    write ``except Exception as e: if e.is_cancellation: ...`` whatever it caught from a durable call.
    """

    is_cancellation = False


class ResultTimeoutError(DurableError, TimeoutError):
    """``result()`` did not see the workflow finish within its ``timeout`` (the workflow goes on). A
    ``TimeoutError`` too, so ``except TimeoutError`` catches it, and it has ``is_cancellation`` like every error.
    ``last_status``: the status the wait last read (``None``: Redis never answered it)."""

    def __init__(self, message: str, last_status: str | None = None) -> None:
        super().__init__(message)
        self.last_status = last_status


class WorkflowTimerError(DurableError, RuntimeError):
    """Workflow code used an asyncio timer (``asyncio.sleep(n)``, ``wait_for``, ``timeout``): a durable wait is
    ``ctx.sleep``. A ``RuntimeError`` too (what it was before it joined the errors)."""


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
        self.reason = reason or None  # a cancel without a reason (stored as "") has none


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


class WorkflowFinishedError(DurableError):
    """The workflow has already finished (``COMPLETED``, ``FAILED`` or ``CANCELLED``): too late to cancel it or
    to send it an event. From ``send_event`` it is also a :class:`WorkflowNotFoundError`, as the contract says
    (the event has no workflow left to go to)."""


class FinishedWorkflowNotFoundError(WorkflowFinishedError, WorkflowNotFoundError):
    """What ``send_event`` raises for a finished workflow: catch it as either of its two bases."""


class WorkflowNotHaltedError(DurableError):
    """``resume`` of a workflow that is not ``VERSION_MISMATCH``: there is nothing to resume."""


class VersionNotLiveError(DurableError):
    """``resume`` while no live dispatcher runs the workflow's version yet: deploy it first."""


class DeadLetterNotParkedError(DurableError):
    """``dlq retry``/``dlq fail`` of an entry whose workflow is not parked on it (it raised, or was resolved)."""


class RegistrationError(DurableError):
    """What dispatchers registered for a workflow cannot be used (e.g. an input schema that does not load)."""


class ReplicationError(DurableError, ConnectionError):
    """A write was applied but fewer replicas than ``BDURABLE_WAIT_REPLICAS`` confirmed it in time.

    Also a ``ConnectionError``: callers treat it like an outage and retry; every b-durable write is idempotent.
    """


class DeadLetterNotFoundError(DurableError):
    """No dead-letter entry with that id (never existed, purged, or already retried or failed)."""


class WorkflowAlreadyExistsError(DurableError):
    """The workflow id is already used by a workflow of another name."""


class UnknownWorkflowError(DurableError):
    """No dispatcher has registered a workflow of that name (or that version)."""


class InvalidInputError(DurableError, ValueError):
    """Bad input, refused before anything is written: a workflow input that does not match its annotated type,
    an invalid workflow id, event name, status, cursor or option. Also a ``ValueError``."""


class PayloadTooLargeError(DurableError):
    """A payload is larger than ``BDURABLE_MAX_PAYLOAD``; nothing was written."""


class PayloadUnreadableError(DurableError):
    """A payload stored in Redis cannot be turned back into its value (see docs/security.md).

    Raised wherever the value itself is needed: a dispatcher running the workflow or task (which then fails
    with this error, naming it), and ``client.result()``. Views (``get_state``, ``list``, ``history``,
    ``signals``, the CLI, the console, ``bdurable export``) show a placeholder instead of failing.
    """


class EncryptionKeyMissingError(PayloadUnreadableError):
    """The payload was encrypted with a key this process does not have (not among
    ``BDURABLE_ENCRYPTION_KEYS``), or encoded by a custom codec it does not have (``BDURABLE_CODEC``)."""


class PayloadIntegrityError(PayloadUnreadableError):
    """The stored payload is not what the engine wrote: its authentication tag, compression frame or envelope
    does not check out (tampered with, truncated or corrupted in Redis). Never returned as garbage."""


class NonDeterminismError(DurableError):
    """A replay issued durable calls that differ from the recorded history.

    Besides its message, it says where, for tools that report it (``bdurable replay``, ``Replayer``):
    ``seq`` is the number of the first durable call that differs, ``recorded`` and ``new`` describe that call
    as the history holds it and as the code makes it now, each ``{"kind", "name", "arguments"}`` (arguments
    when known), or ``None`` where there is no call (one the code added, or one it no longer makes).
    ``seq`` is ``None`` when every call matched but the workflow now ends differently: ``recorded`` and
    ``new`` then describe the two endings, ``{"status", "output", "error"}``. All three are ``None`` on an
    error rebuilt from its record.
    """

    def __init__(
        self,
        message: str,
        *,
        seq: int | None = None,
        recorded: Mapping[str, Any] | None = None,
        new: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.seq = seq
        self.recorded = None if recorded is None else dict(recorded)
        self.new = None if new is None else dict(new)


class NonRetryableError(DurableError):
    """Raise from a task to fail it at once, skipping its remaining attempts."""


class ScheduleNotFoundError(DurableError):
    """No schedule with that id (never created, or deleted)."""


class ScheduleAlreadyExistsError(DurableError):
    """``create_schedule`` with an id that a schedule already has (update or delete it instead)."""
