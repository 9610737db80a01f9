"""``BDURABLE_EVENT_LOOP``: role processes run on asyncio's own loop unless uvloop is asked for; on either, they
run workflows the same; a value that names no loop stops the role before it starts, with a usage error."""

from __future__ import annotations

import json

import pytest
from support import RoleProcesses, eventually

from bdurable import Client


def loop_of(processes: RoleProcesses, process: object) -> str | None:
    """The event loop a role process logged (at debug level) when it began to serve."""
    for line in processes.log_of(process).splitlines():  # type: ignore[arg-type]
        if line.startswith("{") and json.loads(line).get("event") == "event loop":
            return str(json.loads(line)["event_loop"])
    return None


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_roles_run_workflows_on_the_chosen_loop(
    client: Client, processes: RoleProcesses, event_loop: str
) -> None:
    env = {"BDURABLE_EVENT_LOOP": event_loop, "BDURABLE_LOG_LEVEL": "debug"}
    dispatcher = processes.start("dispatcher", "--app", "cli_app", **env)
    processes.start("scheduler", **env)
    await eventually(lambda: client.reads.registered_versions("adder"), timeout=20)
    handle = await client.start("adder", {"a": 2, "b": 3})
    assert await handle.result(timeout=10) == 5
    assert await eventually(lambda: loop_of(processes, dispatcher)) == event_loop


def test_a_loop_that_does_not_exist_is_a_usage_error(processes: RoleProcesses) -> None:
    dispatcher = processes.start("dispatcher", "--app", "cli_app", BDURABLE_EVENT_LOOP="tokio")
    assert dispatcher.wait(timeout=30) == 2
    assert "invalid event loop 'tokio'" in processes.log_of(dispatcher)
