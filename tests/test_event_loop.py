"""How a role process runs its loop. ``BDURABLE_EVENT_LOOP``: role processes run on asyncio's own loop unless
uvloop is asked for; on either, they run workflows the same; a value that names no loop stops the role before it
starts, with a usage error. And before it serves, a role process settles its heap (``bdurable.runtime.heap``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support import RoleProcesses, eventually

from bdurable import Client
from bdurable.runtime.heap import GC_THRESHOLDS


def serving_line(processes: RoleProcesses, process: object) -> dict[str, Any] | None:
    """The line a role process logged (at debug level) when it began to serve."""
    for line in processes.log_of(process).splitlines():  # type: ignore[arg-type]
        if line.startswith("{") and json.loads(line).get("event") == "event loop":
            return dict(json.loads(line))
    return None


def loop_of(processes: RoleProcesses, process: object) -> str | None:
    """The event loop a role process logged when it began to serve."""
    line = serving_line(processes, process)
    return None if line is None else str(line["event_loop"])


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


async def test_role_processes_settle_their_heap_before_serving(client: Client, processes: RoleProcesses) -> None:
    """What the app's import left alive is frozen (never walked by the collector again), and the collections are
    spaced out: a busy dispatcher spent a fifth of its CPU in the collector without this."""
    env = {"BDURABLE_LOG_LEVEL": "debug"}
    dispatcher = processes.start("dispatcher", "--app", "cli_app", **env)
    scheduler = processes.start("scheduler", **env)
    await eventually(lambda: client.reads.registered_versions("adder"), timeout=20)
    for process in (dispatcher, scheduler):
        line = await eventually(lambda process=process: serving_line(processes, process))
        assert line["gc_thresholds"] == list(GC_THRESHOLDS)
        assert line["gc_frozen"] > 10_000  # the modules, classes and functions of bdurable and its dependencies
    handle = await client.start("adder", {"a": 2, "b": 3})
    assert await handle.result(timeout=10) == 5
