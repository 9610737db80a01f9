"""Helpers for testing workflows: check today's code against recorded histories (``Replayer``).

Each helper lives in its own module; this package only re-exports them.
"""

from bdurable.testing.replayer import Replayer, ReplayResult

__all__ = [
    "ReplayResult",
    "Replayer",
]
