"""The step documents a dispatcher sends to ``commit_step.lua``."""

from __future__ import annotations

import traceback

from bdurable.codec import dumps
from bdurable.replay.run import StepResult

__all__ = ["corrupt_history_payload", "step_payload"]


def step_payload(step: StepResult) -> str:
    """What one replayed step did: new calls, released calls, status, and the outcome when it returned."""
    outcome = step.outcome
    return dumps(
        {
            "calls": step.calls,
            "status": step.status,
            "waiting_on": step.waiting_on,
            "outcome": None
            if outcome is None
            else {"status": outcome.status, "output": outcome.output, "error": outcome.error},
            "abandon": step.abandon,
            "cancelled": step.cancelled,
        }
    )


def corrupt_history_payload(exc: BaseException) -> str:
    """A step that fails the workflow because its recorded state cannot be replayed.

    Failing it with a clear error beats leaving it held and RUNNING forever, or crash-looping dispatchers.
    """
    error = {
        "type": "CorruptHistoryError",
        "message": f"the workflow's recorded state in Redis cannot be replayed: {type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc)),
    }
    outcome = {"status": "FAILED", "output": "null", "error": dumps(error)}
    return dumps(
        {"calls": [], "status": "FAILED", "waiting_on": "", "outcome": outcome, "abandon": [], "cancelled": []}
    )
