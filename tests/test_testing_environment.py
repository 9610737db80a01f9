"""The developer kit as a user drives it: ``Worker`` runs the roles in this process, ``WorkflowEnvironment``
skips time (a week-long onboarding finishes in well under a second), and the pytest plugin's fixture."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import clock_app
import entity_app
import pytest
import schedule_app
import stop_app
from redis.exceptions import ConnectionError as RedisConnectionError
from support import eventually

import examples.onboarding
from bdurable import Client, Settings, Status, Worker
from bdurable.embedded import free_port
from bdurable.testing import WorkflowEnvironment

ONBOARDING = {"email": "ada@example.com", "reminder_after": "7 days"}  # a 1-day sleep (the default), a 7-day wait


async def test_a_week_of_onboarding_takes_well_under_a_second(redis_url: str) -> None:
    async with WorkflowEnvironment([examples.onboarding], redis_url=redis_url, time_skipping=True) as env:
        began_at, began = env.now(), time.monotonic()
        handle = await env.client.start(examples.onboarding.user_onboarding, ONBOARDING)
        assert await handle.result(timeout=10) == "sent to ada@example.com: Welcome!"
        elapsed = time.monotonic() - began
        history = await env.client.history(handle.workflow_id)
        assert [(h.kind, h.status) for h in history] == [
            ("sleep", "done"), ("task", "done"), ("event", "failed"), ("task", "done"), ("signal", "done")
        ]  # fmt: skip
        assert env.now() - began_at >= timedelta(days=8)  # one day, then seven
        sleep, reminder = history[0], history[3]
        assert sleep.started_at is not None
        assert sleep.finished_at is not None
        assert sleep.finished_at - sleep.started_at >= timedelta(days=1)
        assert reminder.started_at is not None
        assert reminder.started_at - sleep.started_at >= timedelta(days=8)
    assert elapsed < 1.0, elapsed


async def test_time_skips_while_the_test_follows_a_workflow_s_signals_and_changes(redis_url: str) -> None:
    async with WorkflowEnvironment([examples.onboarding], redis_url=redis_url, time_skipping=True) as env:
        for follow in (env.client.signals, env.client.watch):
            handle = await env.client.start(examples.onboarding.user_onboarding, ONBOARDING)
            began = time.monotonic()
            async with asyncio.timeout(10):  # a day's sleep and a week's wait, skipped: the stream ends
                items = [item async for item in follow(handle.workflow_id)]
            assert time.monotonic() - began < 5.0
            assert items
            state = await handle.state()
            assert state is not None
            assert state.status == Status.COMPLETED


async def test_sleep_moves_the_clock_on_and_an_event_beats_the_reminder(redis_url: str) -> None:
    async with WorkflowEnvironment([examples.onboarding], redis_url=redis_url, time_skipping=True) as env:
        handle = await env.client.start(examples.onboarding.user_onboarding, ONBOARDING)
        await env.sleep("1 day")  # the welcome email goes out ...
        state = await handle.state()
        assert state is not None
        assert (state.status, state.waiting_on) == (Status.AWAITING_EVENT, "event 'profile.completed' (timeout 7 days)")
        await env.sleep("3 days")  # ... and three days later the profile is completed: no reminder
        await handle.send_event("profile.completed")
        assert await handle.result(timeout=10) == "sent to ada@example.com: Welcome!"
        kinds = [(h.kind, h.status) for h in await env.client.history(handle.workflow_id)]
        assert kinds == [("sleep", "done"), ("task", "done"), ("event", "done"), ("signal", "done")]


async def test_ctx_now_timers_event_timeouts_delayed_starts_and_schedules_follow_the_clock(redis_url: str) -> None:
    month = Settings(retention=30 * 86400)  # every firing below is read after the 15 days, none expired
    async with WorkflowEnvironment(
        [clock_app, schedule_app], redis_url=redis_url, time_skipping=True, settings=month
    ) as env:
        first, last = await (await env.client.start(clock_app.clock_reader, None)).result(timeout=10)
        assert datetime.fromisoformat(last) - datetime.fromisoformat(first) >= timedelta(days=5)
        later = await env.client.start(schedule_app.tick, "later", start_delay="2 days")
        assert later.status == Status.SCHEDULED
        assert await later.result(timeout=10) == f"ran {later.workflow_id}"
        created = env.now()
        await env.client.create_schedule("weekly", schedule_app.tick, None, cron="0 9 * * MON", timezone="UTC")
        await env.sleep("15 days")
        mondays = [created.replace(hour=9, minute=0, second=0, microsecond=0) + timedelta(days=d) for d in range(17)]
        expected = [m for m in mondays if m.weekday() == 0 and created < m <= env.now()]
        recent = (await env.client.get_schedule("weekly")).recent
        assert [r["scheduled_at"] for r in recent] == expected  # every Monday 09:00 of the environment's clock
        assert len(expected) >= 2
        for firing in recent:
            assert await env.client.result(firing["workflow_id"], timeout=10) == f"ran {firing['workflow_id']}"


async def test_a_run_buffered_behind_another_does_not_slow_the_clock(redis_url: str) -> None:
    """A firing that waits for the run in progress (buffer_one) starts as soon as that run ends, and waiting for it
    costs no real time: the clock does not creep a second at a time meanwhile (it did: ~50x real time)."""
    async with WorkflowEnvironment([schedule_app], redis_url=redis_url, time_skipping=True) as env:
        await env.client.create_schedule("slow", schedule_app.slow, None, every="1h", overlap="buffer_one")
        began = time.monotonic()
        async with asyncio.timeout(20):
            await env.sleep("6h")
        assert time.monotonic() - began < 10
        runs = [await env.client.get_state(r["workflow_id"]) for r in (await env.client.get_schedule("slow")).recent]
        finished = [run for run in runs if run is not None and run.status == Status.COMPLETED]
        assert len(finished) >= 2, runs
        first, second = finished[0], finished[1]
        assert second.created_at - first.updated_at <= timedelta(seconds=2)  # it waited for the first, no longer


HOLD_AN_ENVIRONMENT = """
import asyncio

import redis

import examples.onboarding
from bdurable.testing import WorkflowEnvironment


async def main() -> None:
    async with WorkflowEnvironment([examples.onboarding], time_skipping=True) as env:
        server = redis.Redis.from_url(env.client.settings.redis_url)
        print("server-pid", server.info("server")["process_id"], flush=True)
        await asyncio.sleep(60)


asyncio.run(main())
"""


def _running(pid: int) -> bool:
    """Whether the process runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the server follows its parent's death on Linux")
def test_the_embedded_server_dies_with_a_test_process_stopped_by_sigterm(tmp_path: Path) -> None:
    """A test run cancelled by SIGTERM (CI stopping a job) runs no cleanup: its server must not outlive it."""
    script = tmp_path / "hold.py"
    script.write_text(HOLD_AN_ENVIRONMENT)
    repository = str(Path(__file__).parents[1])  # examples.onboarding
    environment = {**os.environ, "PYTHONPATH": repository}
    server_pid = 0
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=environment) as process:
        try:
            assert process.stdout is not None
            lines = iter(process.stdout.readline, "")  # the roles' log lines come first
            server_pid = int(next(line for line in lines if line.startswith("server-pid ")).split()[1])
            assert _running(server_pid)
            process.send_signal(signal.SIGTERM)
            process.wait(10)
            deadline = time.monotonic() + 10
            while _running(server_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _running(server_pid), "the embedded server outlived the test process"
        finally:
            process.kill()
            if server_pid and _running(server_pid):
                os.kill(server_pid, signal.SIGKILL)  # this test leaves nothing running, even when it fails


async def test_retention_follows_the_clock_and_the_environment_s_settings(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment reads BDURABLE_* as a Worker and a Client do (its own server and prefix aside), and a
    # finished workflow is gone the moment env.sleep has gone past its retention, not a sweep later.
    monkeypatch.setenv("BDURABLE_RETENTION", "1h")
    monkeypatch.setenv("BDURABLE_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: the environment's own
    monkeypatch.setenv("BDURABLE_PREFIX", "not:valid")  # never read (it would be refused)
    async with WorkflowEnvironment([examples.onboarding], redis_url=redis_url, time_skipping=True) as env:
        assert env.settings is not None
        assert env.settings.retention == 3600
        handle = await env.client.start(examples.onboarding.user_onboarding, ONBOARDING)
        assert await handle.result(timeout=10) == "sent to ada@example.com: Welcome!"
        await env.sleep("59 minutes")
        assert await handle.state() is not None
        await env.sleep("2 minutes")
        assert await handle.state() is None


async def test_continue_as_new_in_an_environment_keeps_the_clock(redis_url: str) -> None:
    async with WorkflowEnvironment([entity_app], redis_url=redis_url, time_skipping=True) as env:
        handle = await env.client.start(entity_app.counting_loop, {"count": 0, "runs": 20})
        assert await handle.result(timeout=20) == {"count": 20}
        state = await handle.state()
        assert state is not None
        assert state.run == 20


async def test_without_time_skipping_the_clock_is_the_real_one(redis_url: str) -> None:
    async with WorkflowEnvironment([examples.onboarding], redis_url=redis_url) as env:
        payload = {"email": "bo@example.com", "welcome_delay": "200ms"}
        began = time.monotonic()
        handle = await env.client.start(examples.onboarding.user_onboarding, payload)
        assert await handle.result(timeout=10) == "sent to bo@example.com: Welcome!"
        assert time.monotonic() - began >= 0.2


async def test_a_worker_runs_the_roles_in_this_process_and_reports_their_metrics(settings: Settings) -> None:
    async with Client(settings=settings) as client:
        async with Worker(apps=[examples.onboarding], settings=settings, concurrency=5) as worker:
            assert worker.running
            handle = await client.start(
                examples.onboarding.user_onboarding, {"email": "cy@example.com", "welcome_delay": "50ms"}
            )
            assert await handle.result(timeout=10) == "sent to cy@example.com: Welcome!"
            task = "examples.onboarding.send_email"
            # The task's commit publishes the finish before the dispatcher has its reply and counts the attempt.
            await eventually(lambda: worker.sample("bdurable_task_attempts_total", task=task, outcome="ok") == 1.0)
            assert worker.sample("bdurable_role_up", role="signal-bus") == 1.0
        assert not worker.running
        # Stopped: a new start waits for a dispatcher.
        waiting = await client.start(examples.onboarding.user_onboarding, {"email": "dee@example.com"})
        await eventually(lambda: _status(client, waiting.workflow_id, Status.RUNNING), timeout=5)


def _of_bdurable(task: asyncio.Task[object]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and "bdurable" in code.co_filename


async def _status(client: Client, workflow_id: str, status: str) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and state.status == status


async def test_a_worker_stop_whose_timeout_runs_out_leaves_no_task_running(settings: Settings) -> None:
    """stop() ends the roles as the end of a process would: a task attempt still running when its timeout runs
    out is cancelled (and runs again on the next dispatcher, as a killed process's would), not left running."""
    stop_app.BEGAN.clear()
    stop_app.ENDED.clear()
    async with Client(settings=settings) as client:
        worker = Worker(apps=[stop_app], settings=settings, roles=("dispatcher",), concurrency=10)
        await worker.start()
        handles = await client.start_many(stop_app.slow, list(range(5)))
        await eventually(lambda: len(stop_app.BEGAN) == 5, timeout=10)
        await worker.stop(timeout=0.3)
        assert not worker.running
        await asyncio.sleep(2.5)  # past the tasks' two seconds
        assert stop_app.ENDED == []
        async with Worker(apps=[stop_app], settings=settings, roles=("dispatcher", "reaper")):
            assert sorted(await asyncio.gather(*(h.result(timeout=30) for h in handles))) == list(range(5))


async def test_a_stop_that_is_itself_cancelled_still_leaves(settings: Settings) -> None:
    """The caller gives stop() less time than the work's cleanup takes: the dispatcher still stops beating and
    leaves (handing its work back), so that the next dispatcher runs the workflow, with no reaper wait."""
    stop_app.STUBBORN.clear()
    async with Client(settings=settings) as client:
        worker = Worker(apps=[stop_app], settings=settings, roles=("dispatcher",))
        await worker.start()
        handle = await client.start(stop_app.stubborn, 7)
        await eventually(lambda: stop_app.STUBBORN == [7], timeout=10)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.6):
                await worker.stop(timeout=0.2)  # the task's cleanup takes 1.5 s
        await asyncio.sleep(2)  # its cleanup is over
        leftover = [t for t in asyncio.all_tasks() if not t.done() and _of_bdurable(t)]
        assert leftover == []  # nothing of the stopped dispatcher beats or runs on
        async with Worker(apps=[stop_app], settings=settings, roles=("dispatcher",)):
            assert await handle.result(timeout=10) == 7


@pytest.mark.parametrize("after", [0.0, 0.02, 0.2])
async def test_a_stop_while_the_worker_starts_wins(settings: Settings, after: float) -> None:
    stop_app.BEGAN.clear()
    worker = Worker(apps=[stop_app], settings=settings, roles=("dispatcher",))
    starting = asyncio.create_task(worker.start())
    await asyncio.sleep(after)  # start() checks Redis, then waits for the roles to serve
    await worker.stop()
    async with asyncio.timeout(10):
        await starting  # returns, without error
    assert not worker.running
    async with Client(settings=settings) as client:
        handle = await client.start(stop_app.slow, 1)
        await asyncio.sleep(0.3)
        assert (await handle.state()).status == Status.RUNNING  # nobody runs it
        assert stop_app.BEGAN == []


async def test_a_worker_refuses_what_cannot_run(settings: Settings) -> None:
    with pytest.raises(ValueError, match="needs apps"):
        Worker(settings=settings)
    with pytest.raises(ValueError, match="unknown role"):
        Worker(apps=[examples.onboarding], settings=settings, roles=("dispatcher", "console"))


async def test_a_worker_without_redis_fails_at_once(settings: Settings) -> None:
    # The roles wait out an outage, as production processes must; start() reaches Redis first, as a client does,
    # so that an unreachable server fails at once with the address, not as a bare timeout a minute later.
    port = free_port()
    worker = Worker(apps=[examples.onboarding], settings=settings, redis_url=f"redis://127.0.0.1:{port}/0")
    began = time.monotonic()
    with pytest.raises(RedisConnectionError, match=f"127.0.0.1:{port}"):
        await worker.start()
    assert time.monotonic() - began < 10
    assert not worker.running


@pytest.fixture
def bdurable_apps() -> list[object]:
    return [examples.onboarding]


async def test_the_pytest_plugin_fixture_gives_a_time_skipping_environment(workflow_env: WorkflowEnvironment) -> None:
    assert workflow_env.time_skipping
    handle = await workflow_env.client.start("user_onboarding", ONBOARDING)
    assert await handle.result(timeout=10) == "sent to ada@example.com: Welcome!"


@pytest.fixture
def redis_url(settings: Settings) -> str:
    return settings.redis_url
