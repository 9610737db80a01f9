"""One task attempt: run the task's function and say what happened, for ``commit_task.lua`` to apply."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import anyio

from bdurable.codec import annotation_mismatch, dumps, loads, to_json_value
from bdurable.errors import NonRetryableError, PayloadIntegrityError, PayloadTooLargeError
from bdurable.payloads import PayloadCodec
from bdurable.runtime.faults import crash_point
from bdurable.task import ArgumentMismatch, Task
from bdurable.wire import ErrorRecord, TaskCall

__all__ = ["Attempt", "run_attempt"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """How an attempt ended: its result (JSON text), or the error and whether another attempt may help."""

    result: str | None = None
    error: ErrorRecord | None = None
    retryable: bool = True

    @property
    def ok(self) -> bool:
        return self.error is None


async def run_attempt(
    task: Task[Any, Any] | None,
    call: TaskCall,
    *,
    max_payload: int,
    threads: anyio.CapacityLimiter | None = None,
    codec: PayloadCodec | None = None,
) -> Attempt:
    """Run one attempt of ``call``. ``task`` is the registered task, or ``None`` when this dispatcher's modules
    do not define it (the attempt fails, and is retried, maybe elsewhere). A timed-out attempt has failed;
    a ``NonRetryableError``, arguments that fail their integrity check, arguments or a result that do not
    match the task's annotations, or a result over the payload limit fail the call at once. ``codec`` opens
    sealed arguments (their size was checked when the workflow called it)."""
    if task is None:
        missing = LookupError(f"no task named {call.name!r} in this dispatcher's --app modules")
        return Attempt(error=ErrorRecord.from_exception(missing))
    try:
        crash_point("in_task")
        arguments = codec.open(call.args) if codec is not None else loads(call.args)
        if call.timeout_ms:  # no timeout context at all without a timeout: it costs per attempt
            async with asyncio.timeout(call.timeout_ms / 1000):
                result = await task.invoke(arguments, threads=threads)
        else:
            result = await task.invoke(arguments, threads=threads)
        value = to_json_value(result)
        text = dumps(value)
    except (NonRetryableError, PayloadIntegrityError) as error:
        return Attempt(error=ErrorRecord.from_exception(error), retryable=False)
    except ArgumentMismatch as wrong:  # the function did not run; another attempt would fail the same way
        return Attempt(error=ErrorRecord.from_exception(TypeError(str(wrong))), retryable=False)
    except TimeoutError:
        timed_out = TimeoutError(f"task attempt timed out after {call.timeout_ms / 1000:g}s")
        return Attempt(error=ErrorRecord.from_exception(timed_out))
    except BaseException as error:  # any exception, SystemExit, KeyboardInterrupt, its own CancelledError...
        if isinstance(error, GeneratorExit):
            raise
        if _handler_cancelled():  # the dispatcher stops this handler (a released call, a drain that timed out)
            if isinstance(error, asyncio.CancelledError):
                raise
            raise asyncio.CancelledError from error  # whatever the task's code turned that cancellation into
        # An attempt that raised it has failed, whatever it is: let out, asyncio would stop the whole
        # dispatcher on SystemExit or KeyboardInterrupt (and the next one to claim the call), or take a
        # CancelledError for this handler's own cancellation, and the attempt would never be counted.
        return Attempt(error=ErrorRecord.from_exception(error))
    mismatch = annotation_mismatch(value, task.return_annotation, what=f"the result of task {task.name}")
    if mismatch is not None:  # the code's answer, not a passing fault: another attempt would return the same
        return Attempt(error=ErrorRecord.from_exception(TypeError(mismatch)), retryable=False)
    size = len(text.encode())
    if size > max_payload:
        too_big = PayloadTooLargeError(
            f"the result of task {task.name} is {size} bytes, over the limit of {max_payload} bytes "
            "(BDURABLE_MAX_PAYLOAD)"
        )
        return Attempt(error=ErrorRecord.from_exception(too_big), retryable=False)
    return Attempt(result=text)


def _handler_cancelled() -> bool:
    """Whether someone cancelled the task running this attempt (``asyncio.timeout`` takes its own cancellation
    back before it raises ``TimeoutError``): a ``CancelledError`` then is that cancellation, not the task's."""
    handler = asyncio.current_task()
    return handler is not None and handler.cancelling() > 0
