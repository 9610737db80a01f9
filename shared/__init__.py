"""b-durable: plain ``async def`` functions as durable, composable workflows on Redis.

The public API is exactly what this module exports; everything else is internal.
"""

from bdurable.client import Client, WorkflowHandle
from bdurable.config import Settings
from bdurable.errors import (
    ChildWorkflowError,
    DeadLetterNotFoundError,
    DurableError,
    EventTimeoutError,
    InvalidInputError,
    NonDeterminismError,
    NonRetryableError,
    PayloadTooLargeError,
    TaskFailedError,
    UnknownWorkflowError,
    WorkflowAlreadyExistsError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from bdurable.model import DeadLetter, HistoryEntry, Signal, Status, WorkflowPage, WorkflowState
from bdurable.replay.context import Context
from bdurable.task import Task, task
from bdurable.workflow import Workflow, workflow

__all__ = [
    "ChildWorkflowError",
    "Client",
    "Context",
    "DeadLetter",
    "DeadLetterNotFoundError",
    "DurableError",
    "EventTimeoutError",
    "HistoryEntry",
    "InvalidInputError",
    "NonDeterminismError",
    "NonRetryableError",
    "PayloadTooLargeError",
    "Settings",
    "Signal",
    "Status",
    "Task",
    "TaskFailedError",
    "UnknownWorkflowError",
    "Workflow",
    "WorkflowAlreadyExistsError",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowPage",
    "WorkflowState",
    "task",
    "workflow",
]

__version__ = "0.1.0"
