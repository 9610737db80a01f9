"""Workflows of the payload-protection and tracing tests: every kind of payload the engine stores, each carrying
the test's secret, so that a raw read of Redis can look for it; and a custom payload codec.

Tasks report nothing through module state: these workflows also run in real dispatcher processes.
"""

from __future__ import annotations

from typing import Any

from bdurable import Context, NonRetryableError, TaskFailedError, task, workflow

ATTEMPTS: dict[str, int] = {}  # secret -> attempts of `flaky` seen in this process


@task
async def echo(value: Any) -> Any:
    return value


@task(max_attempts=3, backoff="10ms")
async def flaky(secret: str) -> str:
    """Fails its first attempt with the secret in its message (and so in its traceback), then succeeds."""
    ATTEMPTS[secret] = ATTEMPTS.get(secret, 0) + 1
    if ATTEMPTS[secret] == 1:
        raise ValueError(f"first attempt fails for {secret}")
    return f"result {secret}"


@task(max_attempts=1)
async def doomed(secret: str) -> None:
    """Dead-letters at once: its arguments and error (with the secret) stay in the dead-letter queue."""
    raise NonRetryableError(f"doomed {secret}")


@workflow(version="1")
async def child(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    return {"child saw": input["secret"]}


@workflow(version="1")
async def everything(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    """Every kind of payload, each with the secret: input, task arguments and results, a retried attempt's error,
    a dead letter, a signal, an event, a child's input and output, a recorded value, a large (compressed) result,
    and the output."""
    secret = input["secret"]
    echoed = await echo({"big": secret * 2000})  # well over BDURABLE_COMPRESS_ABOVE
    retried = await flaky(secret)
    try:
        await doomed(secret)
    except TaskFailedError as error:
        failure = error.message
    await ctx.signal("progress", {"secret": secret})
    await ctx.sleep(0.05)
    event = await ctx.wait_for_event("go")
    from_child = await ctx.execute(child, {"secret": secret}, workflow_id=f"{ctx.workflow_id}-child")
    value = str(ctx.uuid4())
    return {
        "secret": secret,
        "echoed": len(echoed["big"]),
        "retried": retried,
        "failure": failure,
        "event": event,
        "child": from_child,
        "value": value,
    }


@workflow(version="1")
async def waits(ctx: Context, input: dict[str, Any]) -> dict[str, Any]:
    """Waits for an event, then returns its input and the event: a run that spans a key rotation."""
    event = await ctx.wait_for_event("go")
    return {"input": input, "event": event}


@workflow(version="1")
async def fails(ctx: Context, input: dict[str, Any]) -> None:
    """Fails with the secret in its message."""
    raise RuntimeError(f"workflow failed for {input['secret']}")


class Reverse:
    """A custom codec (``BDURABLE_CODEC=protection_app:Reverse``): reversed bytes behind a tag, checked back."""

    TAG = b"rev1:"

    def encode(self, data: bytes) -> bytes:
        return self.TAG + data[::-1]

    def decode(self, data: bytes) -> bytes:
        if not data.startswith(self.TAG):
            raise ValueError("not written by Reverse")
        return data[len(self.TAG) :][::-1]


class Outage(Reverse):
    """``Reverse`` whose service can be down (set by the test in this process): while ``down``, decode raises
    ``ConnectionError`` (counted in ``refused``), as a KMS client does when the KMS does not answer; while
    ``encode_down``, encode does."""

    down = False
    encode_down = False
    refused = 0

    def encode(self, data: bytes) -> bytes:
        if Outage.encode_down:
            raise ConnectionError("KMS unreachable")
        return super().encode(data)

    def decode(self, data: bytes) -> bytes:
        if Outage.down:
            Outage.refused += 1
            raise ConnectionError("KMS unreachable")
        return super().decode(data)
