"""Commands that act on a running workflow: ``send-event``, ``publish-event``, ``cancel``, ``resume``.

They print a short confirmation on success; every refusal (unknown id, workflow not halted, malformed
payload) comes back from the client as a typed error and leaves with the contract's exit code.
"""

from __future__ import annotations

from typing import Annotated

import typer

from bdurable.cli.common import (
    Debug,
    JsonOutput,
    Prefix,
    RedisUrl,
    client_settings,
    echo_done,
    handles_errors,
    parse_json,
    run,
    with_client,
)
from bdurable.client import Client

__all__ = ["register"]

WorkflowId = Annotated[str, typer.Argument(metavar="ID", help="Workflow id.")]
Payload = Annotated[str | None, typer.Option("--payload", help="Payload as JSON, or @file (@- for stdin).")]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``bdurable`` app."""
    app.command("send-event")(send_event)
    app.command("publish-event")(publish_event)
    app.command("cancel")(cancel)
    app.command("resume")(resume)


@handles_errors
def send_event(
    workflow_id: WorkflowId,
    event: Annotated[str, typer.Argument(metavar="EVENT", help="Event name.")],
    payload: Payload = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Deliver an event to one workflow (kept until it waits for it)."""
    settings = client_settings(redis_url, prefix)
    value = parse_json(payload, "--payload")

    async def main() -> None:
        async with Client(settings=settings) as client:
            await client.send_event(workflow_id, event, value)

    run(main())
    # Accepted, not delivered: it is stored durably for the signal bus, which hands it to the workflow when it
    # waits for that event (at once if it already waits and a bus runs).
    echo_done(json_output, f"event {event!r} accepted for {workflow_id}",
              {"workflow_id": workflow_id, "event": event, "accepted": True})  # fmt: skip


@handles_errors
def publish_event(
    event: Annotated[str, typer.Argument(metavar="EVENT", help="Event name.")],
    key: Annotated[str, typer.Option("--key", help="Wake the workflows waiting on this event with this key.")],
    payload: Payload = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Wake every workflow waiting on EVENT with --key; prints how many were woken."""
    settings = client_settings(redis_url, prefix)
    value = parse_json(payload, "--payload")

    async def main() -> int:
        async with Client(settings=settings) as client:
            return await client.publish_event(event, value, key=key)

    woken = run(main())
    echo_done(json_output, f"woke {woken} workflow{'' if woken == 1 else 's'}", {"woken": woken})


@handles_errors
def cancel(
    workflow_id: WorkflowId,
    reason: Annotated[str | None, typer.Option("--reason", help="Why; the workflow and result() see it.")] = None,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Cancel a workflow: it receives WorkflowCancelledError where it waits and may clean up."""
    with_client(redis_url, prefix, lambda client: client.cancel(workflow_id, reason=reason))
    echo_done(json_output, f"cancellation of {workflow_id} requested", {"workflow_id": workflow_id, "cancel": True})


@handles_errors
def resume(
    workflow_id: WorkflowId,
    redis_url: RedisUrl = None,
    prefix: Prefix = None,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Re-queue a VERSION_MISMATCH workflow once a dispatcher with its version is running."""
    with_client(redis_url, prefix, lambda client: client.resume(workflow_id))
    echo_done(json_output, f"workflow {workflow_id} resumed", {"workflow_id": workflow_id, "resumed": True})
