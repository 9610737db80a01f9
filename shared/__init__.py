"""b-durable: plain ``async def`` functions as durable, composable workflows on Redis.

The public API is exactly what this module exports; everything else is internal.
"""

from bdurable.client import Client, WorkflowHandle
from bdurable.config import Settings
from bdurable.errors import (
    ChildWorkflowError,
    DeadLetterNotFoundError,
    DeadLetterNotParkedError,
    DurableError,
    EncryptionKeyMissingError,
    EventTimeoutError,
    InvalidInputError,
    NonDeterminismError,
    NonRetryableError,
    PayloadIntegrityError,
    PayloadTooLargeError,
    PayloadUnreadableError,
    RegistrationError,
    ReplicationError,
    ResultTimeoutError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    TaskFailedError,
    UnknownWorkflowError,
    VersionNotLiveError,
    WorkflowAlreadyExistsError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
    WorkflowNotHaltedError,
    WorkflowTimerError,
)
from bdurable.model import DeadLetter, HistoryEntry, ScheduleInfo, Signal, Status, WorkflowPage, WorkflowState
from bdurable.replay.context import Context
from bdurable.task import Task, task
from bdurable.worker import Worker
from bdurable.workflow import Workflow, workflow

__all__ = [
    "ChildWorkflowError",
    "Client",
    "Context",
    "DeadLetter",
    "DeadLetterNotFoundError",
    "DeadLetterNotParkedError",
    "DurableError",
    "EncryptionKeyMissingError",
    "EventTimeoutError",
    "HistoryEntry",
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
    "ScheduleInfo",
    "ScheduleNotFoundError",
    "Settings",
    "Signal",
    "Status",
    "Task",
    "TaskFailedError",
    "UnknownWorkflowError",
    "VersionNotLiveError",
    "Worker",
    "Workflow",
    "WorkflowAlreadyExistsError",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowFinishedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowNotHaltedError",
    "WorkflowPage",
    "WorkflowState",
    "WorkflowTimerError",
    "task",
    "workflow",
]

__version__ = "0.1.0"
