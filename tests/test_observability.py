"""Metrics, health endpoints and structured logs of real role processes."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from support import RoleProcesses, eventually

from bdurable import Client, Settings
from bdurable.embedded import RedisServer, free_port


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


async def _fetch(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, port, path)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_metrics_move_as_workflows_run(client: Client, processes: RoleProcesses) -> None:
    dispatcher_port, scheduler_port = free_port(), free_port()
    processes.start("dispatcher", "--app", "cli_app", "--metrics-port", str(dispatcher_port))
    processes.start("scheduler", "--metrics-port", str(scheduler_port))
    await eventually(lambda: _ready(dispatcher_port), timeout=20)
    for i in range(3):
        await client.start("adder", {"a": i, "b": 1}, workflow_id=f"m{i}")
    for i in range(3):
        assert await client.result(f"m{i}", timeout=10) == i + 1
    await client.start("failing", "boom", workflow_id="bad")
    await eventually(lambda: _status(client, "bad", "FAILED"))

    failed = ("bdurable_workflows_finished_total", (("name", "failing"), ("status", "FAILED")))

    async def scraped_after_the_failure() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        status, text = await _fetch(dispatcher_port, "/metrics")
        assert status == 200
        values = _samples(text)
        return values if values.get(failed) == 1 else None

    # A commit makes its outcome visible (and publishes it) before the dispatcher has its reply and counts it.
    values = await eventually(scraped_after_the_failure, timeout=10)
    assert values[("bdurable_workflows_started_total", (("name", "adder"),))] == 3
    assert values[("bdurable_workflows_finished_total", (("name", "adder"), ("status", "COMPLETED")))] == 3
    assert values[("bdurable_task_attempts_total", (("outcome", "ok"), ("task", "cli_app.add")))] == 3
    assert values[("bdurable_task_attempts_total", (("outcome", "fail"), ("task", "cli_app.explode")))] == 1
    assert values[("bdurable_dead_lettered_total", (("task", "cli_app.explode"),))] == 1
    assert values[("bdurable_step_duration_seconds_count", (("name", "adder"),))] >= 6
    # each adder's task was handed off by the commit before it (no claim round trip), and its final step ran
    # right after the task and committed with it (no claim, no commit of its own)
    assert values[("bdurable_handoffs_total", ())] >= 3
    assert values[("bdurable_steps_with_task_total", ())] == 3
    assert all("workflow_id" not in dict(labels) for _, labels in values)  # bounded label sets: never ids

    async def scheduler_sees_the_dead_letter() -> bool:
        _, scraped = await _fetch(scheduler_port, "/metrics")
        gauges = _samples(scraped)
        return gauges.get(("bdurable_dlq_entries", ())) == 1 and gauges.get(("bdurable_live_dispatchers", ())) == 1

    await eventually(scheduler_sees_the_dead_letter, timeout=10)


async def test_readyz_follows_redis_while_livez_does_not(settings: Settings, tmp_path: Path) -> None:
    """A Redis outage makes every role unready (503), never un-live, however long it lasts: Kubernetes must not
    restart every pod. A Redis that freezes (connections taken, no answer) makes it unready within the probe's
    1 s, saying so."""
    server = RedisServer(data_dir=str(tmp_path / "redis")).start()
    roles = RoleProcesses(replace(settings, redis_url=server.url), tmp_path)
    commands = {"scheduler": [], "reaper": [], "signal-bus": [], "dispatcher": ["--app", "cli_app"]}
    ports = {command: free_port() for command in commands}
    try:
        for command, arguments in commands.items():  # a 1 s liveness window, for an outage of several
            roles.start(command, *arguments, "--liveness-timeout", "1s", "--metrics-port", str(ports[command]))
        for port in ports.values():
            await eventually(lambda port=port: _ready(port), timeout=20)
            assert (await _fetch(port, "/livez"))[0] == 200
        server.kill()
        for port in ports.values():
            await eventually(lambda port=port: _status_code(port, "/readyz", 503), timeout=10)
        for _ in range(8):  # alive through an outage of several liveness windows, past the 2 s retry backoff
            for command, port in ports.items():
                assert (await _fetch(port, "/livez")) == (200, "ok\n"), command
            await asyncio.sleep(0.4)
        server.start()
        for port in ports.values():
            await eventually(lambda port=port: _ready(port), timeout=20)
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)  # a Redis that takes connections but never answers
        try:
            status, body = await _fetch(ports["scheduler"], "/readyz")
            assert (status, body) == (503, "redis unavailable: no answer within 1 s\n")
        finally:
            server.process.send_signal(signal.SIGCONT)
        await eventually(lambda: _ready(ports["scheduler"]), timeout=20)
    finally:
        roles.stop_all()
        server.stop()


async def test_json_log_lines_carry_the_bound_fields(client: Client, processes: RoleProcesses) -> None:
    dispatcher = processes.start("dispatcher", "--app", "cli_app")
    await eventually(lambda: client.store.redis.zcard(client.keys.versions("failing")), timeout=20)
    await client.start("failing", "kaboom", workflow_id="logged")
    await eventually(lambda: _status(client, "logged", "FAILED"))

    def task_failure_logged() -> dict[str, object] | None:
        for line in processes.log_of(dispatcher).splitlines():
            record = json.loads(line)  # every line is one JSON document
            if record.get("event") == "task attempt failed":
                return record
        return None

    record = await eventually(task_failure_logged)
    assert record["level"] == "warning"
    assert record["role"] == "dispatcher"
    assert (record["workflow_id"], record["name"], record["version"], record["step"]) == ("logged", "failing", "1", 0)
    assert record["task"] == "cli_app.explode"
    assert record["attempt"] == 1
    assert str(record["worker"]).startswith("dispatcher-")
    assert "timestamp" in record
    # A workflow's last step committed with its task (the usual path of a one-task workflow): its line is the
    # workflow's, with no task fields left over from the attempt it followed.
    await (await client.start("adder", {"a": 1, "b": 2}, workflow_id="added")).result(timeout=20)

    def finished_lines() -> dict[str, dict[str, object]] | None:
        lines = [json.loads(line) for line in processes.log_of(dispatcher).splitlines()]
        found = {str(r["workflow_id"]): r for r in lines if r.get("event") == "workflow finished"}
        return found if {"logged", "added"} <= set(found) else None

    finished = await eventually(finished_lines)
    assert (finished["logged"]["name"], finished["logged"]["version"], finished["logged"]["status"]) == (
        "failing", "1", "FAILED"
    )  # fmt: skip
    added = finished["added"]
    assert (added["name"], added["version"], added["step"], added["status"]) == ("adder", "1", 1, "COMPLETED")
    assert "task" not in added
    assert "attempt" not in added


async def _ready(port: int) -> bool:
    return (await _fetch(port, "/readyz"))[0] == 200


async def _status_code(port: int, path: str, code: int) -> bool:
    return (await _fetch(port, path))[0] == code


async def _status(client: Client, workflow_id: str, status: str) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and state.status == status


async def test_sigterm_drains_a_dispatcher_process(client: Client, processes: RoleProcesses) -> None:
    """SIGTERM: the dispatcher stops claiming, finishes the task it runs, commits it and exits 0."""

    dispatcher = processes.start("dispatcher", "--app", "cli_app")
    await eventually(lambda: client.store.redis.zcard(client.keys.versions("paused")), timeout=20)
    handle = await client.start("paused", 1.5)
    await eventually(lambda: _status(client, handle.workflow_id, "RUNNING"))
    await asyncio.sleep(0.5)  # the task is running now
    dispatcher.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(dispatcher.wait, 15) == 0
    history = await client.history(handle.workflow_id)
    assert [(entry.kind, entry.status, entry.result) for entry in history] == [("task", "done", 1.5)]
    processes.start("dispatcher", "--app", "cli_app")  # the next step runs on a new dispatcher
    assert await handle.result(timeout=20) == 1.5
    log = processes.log_of(dispatcher)
    assert '"event": "draining"' in log
    assert '"event": "dispatcher stopped"' in log


async def test_livez_stays_up_while_every_slot_runs_a_task_longer_than_the_liveness_window(
    client: Client, processes: RoleProcesses
) -> None:
    """Liveness means the loops respond, not that they turn: a dispatcher busy for longer than its liveness
    timeout with long tasks is alive (Kubernetes must not kill it and re-run its work)."""
    port = free_port()
    processes.start("dispatcher", "--app", "cli_app", "--concurrency", "2", "--liveness-timeout", "1s",
                    "--metrics-port", str(port))  # fmt: skip
    await eventually(lambda: client.store.redis.zcard(client.keys.versions("paused")), timeout=20)
    handles = [await client.start("paused", 4.0) for _ in range(2)]  # both slots busy for 4 s
    await eventually(lambda: _status(client, handles[1].workflow_id, "RUNNING"))
    for _ in range(12):  # 3.6 s: more than three liveness windows with no slot free
        assert (await _fetch(port, "/livez"))[0] == 200
        await asyncio.sleep(0.3)
    for handle in handles:
        assert await handle.result(timeout=20) == 4.0


async def test_the_endpoint_answers_before_redis_does_and_sigterm_while_waiting_exits_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    """Startup does not depend on Redis: /livez answers at once, /readyz says not ready, and a SIGTERM while
    the role waits for Redis ends it promptly and cleanly (a pod in a Redis outage is not crash-looped)."""
    import time

    port = free_port()
    for url in (f"redis://127.0.0.1:{free_port()}/0", f"redis+cluster://127.0.0.1:{free_port()}"):
        roles = RoleProcesses(replace(settings, redis_url=url), tmp_path)
        try:
            role = roles.start("scheduler", "--metrics-port", str(port))
            await eventually(lambda: _status_code(port, "/livez", 200), timeout=20)
            assert (await _fetch(port, "/readyz"))[0] == 503
            await asyncio.sleep(1.5)  # still waiting for Redis, still alive
            assert (await _fetch(port, "/livez"))[0] == 200
            began = time.monotonic()
            role.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(role.wait, 10) == 0, roles.log_of(role)
            assert time.monotonic() - began < 3
        finally:
            roles.stop_all()


async def test_the_drain_timeout_setting_bounds_a_drain_and_hands_the_rest_back(
    client: Client, processes: RoleProcesses
) -> None:
    import time

    dispatcher = processes.start("dispatcher", "--app", "cli_app", BDURABLE_DRAIN_TIMEOUT="1s")
    await eventually(lambda: client.store.redis.zcard(client.keys.versions("paused")), timeout=20)
    handle = await client.start("paused", 6.0)
    await eventually(lambda: _status(client, handle.workflow_id, "RUNNING"))
    await asyncio.sleep(0.5)  # the 6 s task is running
    began = time.monotonic()
    dispatcher.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(dispatcher.wait, 15) == 0
    assert time.monotonic() - began < 4  # 1 s of drain, not the task's 6 s (nor the old fixed 25 s)
    assert "drain timed out" in processes.log_of(dispatcher)
    processes.start("dispatcher", "--app", "cli_app")  # the handed-back task runs again here
    assert await handle.result(timeout=30) == 6.0
