"""One task attempt: run the task's function, and turn what happened into what ``commit_task.lua`` applies."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from bdurable.codec import dumps, error_record, loads, to_json_value
from bdurable.errors import NonRetryableError, PayloadTooLargeError
from bdurable.runtime.faults import crash_point
from bdurable.task import Task

__all__ = ["MAX_BACKOFF_MS", "run_attempt"]

MAX_BACKOFF_MS = 300_000

Outcome = tuple[str, str, int]  # ('ok' | 'retry' | 'fail', payload JSON, retry delay ms)


async def run_attempt(
    task: Task[Any, Any] | None, fields: dict[str, str], attempt: int, max_attempts: int, seq: str, max_payload: int
) -> Outcome:
    """Run attempt ``attempt`` of the task call described by ``fields`` (its hash in Redis).

    ``task`` is the registered task, or ``None`` when this dispatcher's modules do not define it (a failed
    attempt, retried elsewhere maybe). The payload of 'ok' is the inbox entry; otherwise the error record.
    """
    if task is None:
        missing = LookupError(f"no task named {fields.get('name')!r} in this dispatcher's --app modules")
        return _failed(missing, attempt, max_attempts, fields)
    timeout_ms = int(fields.get("timeout_ms") or 0)
    try:
        crash_point("in_task")
        arguments = loads(fields.get("args", "{}"))
        if timeout_ms:  # no timeout context at all without a timeout: it costs per attempt
            async with asyncio.timeout(timeout_ms / 1000):
                result = await task.invoke(arguments)
        else:
            result = await task.invoke(arguments)
        text = dumps(to_json_value(result))
    except NonRetryableError as error:
        return "fail", dumps(error_record(error)), 0
    except TimeoutError:
        timed_out = TimeoutError(f"task attempt timed out after {timeout_ms / 1000:g}s")
        return _failed(timed_out, attempt, max_attempts, fields)
    except Exception as error:
        return _failed(error, attempt, max_attempts, fields)
    size = len(text.encode())
    if size > max_payload:
        too_big = PayloadTooLargeError(
            f"the result of task {task.name} is {size} bytes, over the limit of {max_payload} bytes "
            "(BDURABLE_MAX_PAYLOAD)"
        )
        return "fail", dumps(error_record(too_big)), 0
    return "ok", f'{{"seq":{int(seq)},"ok":true,"v":{text}}}', 0


def _failed(error: BaseException, attempt: int, max_attempts: int, fields: dict[str, str]) -> Outcome:
    """A failed attempt: retried with exponential backoff and 10% jitter, or final after ``max_attempts``."""
    payload = dumps(error_record(error))
    if attempt >= max_attempts:
        return "fail", payload, 0
    base = int(fields.get("backoff_ms") or 1000) * 2 ** (attempt - 1)
    delay = min(base, MAX_BACKOFF_MS)
    return "retry", payload, round(delay + random.random() * delay * 0.1)
