"""Helpers for testing workflows: run them in a test with time skipping (``WorkflowEnvironment``), and check
today's code against recorded histories (``Replayer``).

Each helper lives in its own module; this package only re-exports them.
"""

from bdurable.testing.environment import TestClock, WorkflowEnvironment
from bdurable.testing.replayer import Replayer, ReplayResult

__all__ = [
    "ReplayResult",
    "Replayer",
    "TestClock",
    "WorkflowEnvironment",
]
