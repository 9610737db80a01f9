"""The ``bdurable`` command line: exit codes, one-line errors, ``--json`` shapes, real role processes, ``dev``.

Client commands run in-process through typer's ``CliRunner`` (fast); the roles they talk to are real
``python -m bdurable.cli ...`` processes, started once for this module on its own key prefix.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from support import APPS, RoleProcesses
from typer.testing import CliRunner, Result

from bdurable import Settings
from bdurable.cli import app
from bdurable.embedded import RedisServer, free_port
from bdurable.keys import Keys


@dataclass
class Fleet:
    settings: Settings
    env: dict[str, str]


def cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def assert_error(result: Result, code: int, *fragments: str) -> None:
    """The contract for errors: the exit code, one line on stderr, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def fleet(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    settings = Settings(
        redis_url=redis_server.url,
        prefix=f"cli{uuid.uuid4().hex[:8]}",
        heartbeat_interval=0.2,
        heartbeat_timeout=1.0,
    )
    roles = RoleProcesses(settings, tmp_path_factory.mktemp("roles"))
    try:
        roles.start("dispatcher", "--app", "cli_app", "--concurrency", "8")
        for role in ("scheduler", "signal-bus", "reaper"):
            roles.start(role)
        sync = redis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            wait_for(lambda: sync.hexists(Keys(settings.prefix).registry, "parked@1"), timeout=15)
        finally:
            sync.close()
        yield Fleet(settings, {"BDURABLE_REDIS_URL": settings.redis_url, "BDURABLE_PREFIX": settings.prefix})
    finally:
        roles.stop_all()


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """A fresh prefix with no roles: for errors that need no workflow to run."""
    return {"BDURABLE_REDIS_URL": settings.redis_url, "BDURABLE_PREFIX": settings.prefix}


def new_id() -> str:
    return f"wf-{uuid.uuid4().hex[:10]}"


# -- the command line itself ------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("dispatcher", "scheduler", "reaper", "signal-bus", "console", "dev", "start", "state", "result",
                    "send-event", "publish-event", "cancel", "resume", "list", "history", "watch", "check",
                    "doctor", "dlq", "schedule"):  # fmt: skip
        assert command in result.stdout


@pytest.mark.parametrize(
    "command",
    [["start"], ["state"], ["result"], ["list"], ["history"], ["watch"], ["send-event"], ["publish-event"],
     ["cancel"], ["resume"], ["check"], ["doctor"], ["export"], ["replay"], ["dlq", "list"], ["dlq", "show"],
     ["dlq", "retry"], ["dlq", "fail"], ["dlq", "purge"], ["schedule", "create"], ["schedule", "list"],
     ["schedule", "show"], ["schedule", "pause"], ["schedule", "unpause"], ["schedule", "trigger"],
     ["schedule", "backfill"], ["schedule", "delete"]],
)  # fmt: skip
def test_every_command_that_prints_data_takes_json(command: list[str]) -> None:
    """INTERFACE §6: ``--json`` for machine-readable output where a command prints data; an action's
    confirmation is data too (docs/operations.md gives each document)."""
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--json" in result.stdout


def test_python_dash_m_runs_the_cli_and_errors_are_one_line(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bdurable.cli", "state", "no-such-id"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 3
    assert done.stderr.strip() == "error: no workflow with id 'no-such-id' (never started, or expired)"


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    assert cli(env, "start").exit_code == 2
    assert cli(env, "dispatcher").exit_code == 2  # --app is required
    assert cli(env, "list", "--limit", "0").exit_code == 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["list", "--limit", "0"], "'--limit'"),
        (["state"], "Missing argument 'ID'"),
        (["state", "x", "--bogus"], "No such option: --bogus"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["dispatcher", "--app", "examples.onboarding", "--queue", ""], "--queue: the queue name is empty"),
    ],
)
def test_usage_errors_are_one_line_too(env: dict[str, str], args: list[str], fragment: str) -> None:
    """As the installed command runs them (not through typer's test runner): one stderr line, exit 2."""
    done = subprocess.run(
        [sys.executable, "-m", "bdurable.cli", *args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=20,
    )  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    assert fragment in done.stderr, done.stderr
    assert done.stdout == ""


# -- errors and their exit codes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["state", "nope"],
        ["result", "nope"],
        ["history", "nope"],
        ["watch", "nope"],
        ["resume", "nope"],
        ["cancel", "nope"],
        ["send-event", "nope", "approved"],
        ["dlq", "show", "0-999"],
        ["dlq", "retry", "0-999"],
        ["dlq", "fail", "0-999"],
    ],
)
def test_not_found_exits_3(env: dict[str, str], args: list[str]) -> None:
    assert_error(cli(env, *args), 3)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["start", "adder", "--input", '{"a": 1,\n "b": }'], "line 2 column 7"),
        (["send-event", "x", "e", "--payload", "[1, 2"], "--payload is not valid JSON"),
        (["publish-event", "e", "--key", "k", "--payload", "{'a': 1}"], "line 1 column 2"),
        (["start", "adder", "--input", "@/no/such/file.json"], "cannot read --input @/no/such/file.json"),
        (["start", "never_registered"], "no dispatcher has registered a workflow named 'never_registered'"),
        (["start", "adder", "--timeout", "soon"], "invalid --timeout"),
        (["start", "adder", "--timeout", "5"], "--timeout goes with --wait"),
        (["start", "adder", "--input", '{"a": NaN}'], "--input is not valid JSON: NaN is not a JSON value"),
        (["send-event", "x", "e", "--payload", "Infinity"], "--payload is not valid JSON: Infinity is not"),
        (["start", "adder", "--input", '{"a": 1e999}'], "--input is not valid JSON: 1e999 is out of the range"),
        (["start", "adder", "--input", "[" * 100_000 + "]" * 100_000], "--input is nested too deeply"),
        (["start", "adder", "--input", "[" * 300 + "]" * 300], "--input cannot be a payload"),
        (["start", "adder", "--input", '"\\ud800"'], "--input cannot be a payload: it holds text that is not valid"),
        (["send-event", "x", "e", "--payload", '["\\udfff"]'], "--payload cannot be a payload: it holds text"),
        (["state", "x", "--redis-url", f"redis://127.0.0.1:{free_port()}/abc"], "path must be a database number"),
        (["state", "x", "--redis-url", f"redis+cluster://127.0.0.1:{free_port()}/2"], "a cluster has only database 0"),
        (["start", "adder", "--id", "\udcfey"], "must be valid Unicode text"),
        (["start", "adder", "--delay", "banana"], "invalid --delay"),
        (["start", "adder", "--delay", "1m", "--start-at", "2030-01-01T00:00:00Z"], "give --delay or --start-at"),
        (["list", "--status", "SNOOZING"], "unknown status"),
        (["list", "--cursor", "garbage"], "invalid cursor"),
        (["state", "x", "--prefix", "has space"], "invalid prefix"),
        (["state", "x", "--redis-url", "localhost:6379"], "redis+cluster://"),
        (["scheduler", "--heartbeat-timeout", "forever"], "invalid setting"),
        (["dispatcher", "--app", "no_such_module_anywhere"], "cannot import --app module 'no_such_module_anywhere'"),
    ],
)
def test_bad_input_exits_2(env: dict[str, str], args: list[str], fragment: str) -> None:
    assert_error(cli(env, *args), 2, fragment)


def test_a_malformed_redis_url_is_refused_without_showing_it(env: dict[str, str]) -> None:
    result = cli(env, "state", "x", "--redis-url", "redis:/user:secret@host")  # one slash short
    assert_error(result, 2, "must start with redis://, rediss://, unix://, redis+cluster://")
    assert "secret" not in result.stderr + result.stdout  # the URL may hold a password


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("?foo=1", "a query parameter redis-py does not take here: 'foo'"),
        ("?ssl_password=secret", "a query parameter redis-py does not take here: 'ssl_password'"),  # TLS only
        ("?db=abc", "Invalid value for 'db'"),
    ],
)
def test_a_bad_redis_url_option_is_bad_input(query: str, fragment: str) -> None:
    # Nothing listens on the port: the option is refused before any connection, as bad input (exit 2), not
    # as a crash (exit 1) at the first command.
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0{query}"
    result = cli({}, "state", "x", "--redis-url", url)
    assert_error(result, 2, fragment)
    # A role stops at once (its log line says it crashed). Run as a process: a role configures logging for the
    # whole process, and the test runner's captured output is closed once the command returns.
    role = subprocess.run(
        [sys.executable, "-m", "bdurable.cli", "reaper", "--redis-url", url], capture_output=True, text=True,
        timeout=30, env={k: v for k, v in os.environ.items() if not k.startswith("BDURABLE_")},
    )  # fmt: skip
    assert role.returncode == 2, role.stderr
    assert fragment in role.stderr
    assert "Traceback" not in role.stderr
    assert "secret" not in result.stderr + result.stdout + role.stderr + role.stdout
    cluster = cli({}, "state", "x", "--redis-url", url.replace("redis://", "redis+cluster://").replace("/0", ""))
    assert_error(cluster, 2, fragment if query != "?db=abc" else "db")
    for scheme in ("rediss", "rediss+cluster"):  # a TLS option's value is checked as early
        tls = cli({}, "state", "x", "--redis-url", f"{scheme}://127.0.0.1:{free_port()}?ssl_cert_reqs=maybe")
        assert_error(tls, 2, "invalid option: Invalid SSL Certificate Requirements Flag: maybe")


def test_a_redis_url_the_server_refuses_is_bad_input(redis_server: RedisServer) -> None:
    """A URL that reaches a server that refuses it (a database it does not have, a cluster URL for a single
    server) is a wrong setting (exit 2), as is a metrics endpoint a role cannot serve or a console port in use;
    something that is not Redis at the address is an unreachable Redis (exit 4); never an unexpected error
    (exit 1)."""
    host_port = redis_server.url.removeprefix("redis://").partition("/")[0]
    database = cli({}, "state", "x", "--redis-url", f"redis://{host_port}/99")
    assert_error(database, 2, f"the Redis URL redis://{host_port}/99 does not fit the server: DB index is out of")
    cluster = cli({}, "state", "x", "--redis-url", f"redis+cluster://{host_port}")
    assert_error(cluster, 2, "does not fit the server", "Cluster mode is not enabled")
    with socket.socket() as other:  # answers like an HTTP server, whatever it is sent
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]

        def answer() -> None:
            with suppress(OSError):
                connection, _ = other.accept()
                with connection:
                    connection.recv(1024)
                    connection.sendall(b"<html>not redis</html>\r\n")

        threading.Thread(target=answer, daemon=True).start()
        not_redis = cli({}, "state", "x", "--redis-url", f"redis://127.0.0.1:{port}/0")
        assert_error(not_redis, 4, "does not speak Redis's protocol")
        role = subprocess.run(
            [sys.executable, "-m", "bdurable.cli", "reaper", "--redis-url", redis_server.url,
             "--metrics-host", "127.0.0.1", "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        console = subprocess.run(
            [sys.executable, "-m", "bdurable.cli", "console", "--redis-url", redis_server.url, "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert role.returncode == 2, role.stderr
    assert f"cannot serve /metrics, /livez and /readyz on 127.0.0.1:{port}" in role.stderr
    assert "Traceback" not in role.stderr
    assert console.returncode == 2, console.stderr  # the console's port taken: a wrong setting too
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in console.stderr
    assert "Traceback" not in console.stderr


def test_a_cluster_failing_over_is_unreachable_not_a_bad_url() -> None:
    from redis.exceptions import ClusterDownError, MasterDownError, SlotNotCoveredError, TryAgainError

    from bdurable.cli.common import exit_code_for, message_for

    failures = (SlotNotCoveredError('Slot "1234" is not covered by the cluster.'),
                ClusterDownError("The cluster is down"),  # a primary down: CLUSTERDOWN from the others
                MasterDownError("Link with MASTER is down"), TryAgainError("Multiple keys request"))  # fmt: skip
    for failing_over in failures:
        assert exit_code_for(failing_over) == 4, failing_over
        message = message_for(failing_over, "redis+cluster://127.0.0.1:7000")
        assert message.startswith("cannot reach Redis at redis+cluster://127.0.0.1:7000"), message


def test_unreachable_redis_exits_4_and_debug_shows_the_traceback() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for args in (["state", "x"], ["list"], ["doctor"], ["start", "adder"], ["dlq", "list"]):
        assert_error(cli({}, *args, "--redis-url", url), 4, f"cannot reach Redis at {url}")
    debug = cli({}, "state", "x", "--redis-url", url, "--debug")
    assert debug.exit_code == 4
    assert "Traceback" in debug.stderr


def test_input_from_a_file_and_stdin(fleet: Fleet, tmp_path: Path) -> None:
    data = tmp_path / "input.json"
    data.write_text('{"a": 20, "b": 22}')
    result = cli(fleet.env, "start", "adder", "--input", f"@{data}", "--wait", "--json")
    assert json.loads(result.stdout)["output"] == 42
    piped = CliRunner().invoke(app, ["start", "adder", "--input", "@-", "--wait"], input='{"a": 1, "b": 1}',
                               env=fleet.env)  # fmt: skip
    assert piped.stdout.splitlines()[-1] == "2"


# -- workflows through real role processes ----------------------------------------------------------------


def test_start_wait_json_and_plain(fleet: Fleet) -> None:
    result = cli(fleet.env, "start", "adder", "--input", '{"a": 2, "b": 3}', "--wait", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"workflow_id", "status", "output"}
    assert document["status"] == "COMPLETED"
    assert document["output"] == 5
    plain = cli(fleet.env, "start", "adder", "--input", '{"a": 1, "b": 1}', "--id", new_id(), "--wait")
    assert plain.exit_code == 0
    assert plain.stdout.splitlines()[-1] == "2"


def test_start_then_state_result_history(fleet: Fleet) -> None:
    workflow_id = new_id()
    started = cli(fleet.env, "start", "adder", "--input", '{"a": 4, "b": 5}', "--id", workflow_id, "--json")
    assert json.loads(started.stdout) == {"workflow_id": workflow_id, "status": "RUNNING"}
    assert cli(fleet.env, "result", workflow_id, "--timeout", "10").stdout.strip() == "9"
    state = json.loads(cli(fleet.env, "state", workflow_id, "--json").stdout)
    assert set(state) == {"workflow_id", "name", "version", "status", "step", "waiting_on", "input", "output",
                          "error", "parent_id", "created_at", "updated_at", "run"}  # fmt: skip
    assert (state["status"], state["output"], state["step"], state["input"]) == ("COMPLETED", 9, 1, {"a": 4, "b": 5})
    history = json.loads(cli(fleet.env, "history", workflow_id, "--json").stdout)
    assert [set(entry) for entry in history] == [
        {"seq", "kind", "name", "status", "result", "started_at", "finished_at"}
    ]
    assert (history[0]["kind"], history[0]["name"], history[0]["result"]) == ("task", "cli_app.add", 9)
    human = cli(fleet.env, "state", workflow_id)
    assert "COMPLETED" in human.stdout
    assert "adder@1" in human.stdout
    assert "cli_app.add" in cli(fleet.env, "history", workflow_id).stdout
    # the id is an idempotency key: starting it again returns the same run
    again = cli(fleet.env, "start", "adder", "--input", '{"a": 0, "b": 0}', "--id", workflow_id, "--json")
    assert json.loads(again.stdout) == {"workflow_id": workflow_id, "status": "COMPLETED"}


def test_start_refusals_exit_2(fleet: Fleet) -> None:
    workflow_id = new_id()
    assert cli(fleet.env, "start", "adder", "--input", '{"a": 1, "b": 1}', "--id", workflow_id).exit_code == 0
    assert_error(cli(fleet.env, "start", "failing", "--input", '"x"', "--id", workflow_id), 2, "already used")
    assert_error(cli(fleet.env, "start", "adder", "--input", '{"a": "x"}'), 2, "invalid")
    assert_error(cli(fleet.env, "start", "adder", "--version", "9", "--input", "{}"), 2, "no registered version")
    assert cli(fleet.env, "start", "adder", "--version", "1", "--input", '{"a": 1, "b": 1}').exit_code == 0


def test_failed_workflow_exits_1(fleet: Fleet) -> None:
    result = cli(fleet.env, "start", "failing", "--input", '"kaboom"', "--wait")
    assert_error(result, 1, "failed", "kaboom")
    workflow_id = result.stdout.split()[0]
    assert_error(cli(fleet.env, "result", workflow_id), 1, "kaboom")
    as_json = cli(fleet.env, "result", workflow_id, "--json")
    assert as_json.exit_code == 1
    document = json.loads(as_json.stdout)
    assert document["status"] == "FAILED"
    assert document["error"]["type"] == "TaskFailedError"


def test_timeout_exits_124(fleet: Fleet) -> None:
    result = cli(fleet.env, "start", "approval", "--input", '""', "--wait", "--timeout", "0.3")
    assert_error(result, 124, "did not finish within 0.3s")
    cli(fleet.env, "cancel", result.stdout.split()[0])
    # with --json, the document names the workflow (its id may have been generated) and where it stands
    as_json = cli(fleet.env, "start", "approval", "--input", '""', "--wait", "--timeout", "0.3", "--json")
    assert_error(as_json, 124, "did not finish within 0.3s")
    document = json.loads(as_json.stdout)
    assert set(document) == {"workflow_id", "status"}
    assert document["status"] in ("RUNNING", "AWAITING_EVENT")
    cli(fleet.env, "cancel", document["workflow_id"])


def test_list_json_pages_and_filters(fleet: Fleet) -> None:
    ids = [new_id() for _ in range(3)]
    for workflow_id in ids:
        cli(fleet.env, "start", "adder", "--input", '{"a": 1, "b": 2}', "--id", workflow_id, "--wait")
    first = json.loads(cli(fleet.env, "list", "--json", "--limit", "2", "--name", "adder").stdout)
    assert set(first) == {"items", "next_cursor"}
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    second = json.loads(
        cli(fleet.env, "list", "--json", "--limit", "2", "--name", "adder", "--cursor", first["next_cursor"]).stdout
    )
    seen = [item["workflow_id"] for item in first["items"] + second["items"]]
    assert len(set(seen)) == len(seen)
    assert ids[-1] in seen
    assert ids[-2] in seen
    completed = json.loads(cli(fleet.env, "list", "--json", "--status", "completed").stdout)["items"]
    assert completed
    assert {item["status"] for item in completed} == {"COMPLETED"}
    table = cli(fleet.env, "list", "--name", "adder")
    assert table.exit_code == 0
    assert ids[-1] in table.stdout


def test_list_by_id_prefix_pages_within_the_prefix_and_says_how_to_go_on(fleet: Fleet) -> None:
    tag = f"m{uuid.uuid4().hex[:6]}"
    ids = [f"{tag}-{n}" for n in range(3)]
    for workflow_id in [f"a{tag}", *ids]:  # one id sorts before the prefix
        cli(fleet.env, "start", "adder", "--input", '{"a": 1, "b": 2}', "--id", workflow_id)
    early = json.loads(cli(fleet.env, "list", "--json", "--id-prefix", f"{tag}-", "--cursor", "0").stdout)
    assert [item["workflow_id"] for item in early["items"]] == ids  # a cursor before the prefix: from its start
    page = cli(fleet.env, "list", "--id-prefix", f"{tag}-", "--limit", "2", "--name", "adder")
    assert page.exit_code == 0
    hint = page.stderr.strip()
    prefix = fleet.settings.prefix  # the hint runs against the same prefix, however it was given
    assert hint == f"more: bdurable list --name adder --id-prefix {tag}- --prefix {prefix} --limit 2 --cursor {ids[1]}"
    rest = cli(fleet.env, *hint.removeprefix("more: bdurable ").split())  # the hint, run as it is
    assert rest.exit_code == 0, rest.stderr
    assert ids[2] in rest.stdout
    assert ids[1] not in rest.stdout
    assert not rest.stderr


def test_watch_prints_signals_and_status_changes(fleet: Fleet) -> None:
    workflow_id = new_id()
    cli(fleet.env, "start", "progress", "--input", "4", "--id", workflow_id)
    result = cli(fleet.env, "watch", workflow_id, "--json")
    assert result.exit_code == 0, result.stderr
    changes = [json.loads(line) for line in result.stdout.splitlines()]
    assert changes[-1]["status"] == "COMPLETED"
    signals = [change["signal"] for change in changes if "signal" in change]
    assert signals
    assert all(s["name"] == "progress" for s in signals)
    assert signals[-1]["payload"] == {"done": 4, "of": 4}
    time.sleep(1.1)  # the signals are now from the past: each line must show when it was sent, not when it was read
    human = cli(fleet.env, "watch", workflow_id)
    assert human.exit_code == 0
    assert "COMPLETED" in human.stdout
    shown = [line.split()[0] for line in human.stdout.splitlines() if " signal progress " in line]
    assert shown == [datetime.fromtimestamp(s["at"] / 1000).strftime("%H:%M:%S") for s in signals]


def test_watch_of_a_failed_workflow_exits_1(fleet: Fleet) -> None:
    started = cli(fleet.env, "start", "failing", "--input", '"no"', "--wait")
    assert cli(fleet.env, "watch", started.stdout.split()[0]).exit_code == 1


def test_send_event_publish_event_and_cancel(fleet: Fleet) -> None:
    sent, published, cancelled = new_id(), new_id(), new_id()
    cli(fleet.env, "start", "approval", "--input", '""', "--id", sent)
    sending = cli(fleet.env, "send-event", sent, "approved", "--payload", '{"by": "ann"}', "--json")
    assert sending.exit_code == 0, sending.stderr
    assert json.loads(sending.stdout) == {"workflow_id": sent, "event": "approved", "accepted": True}
    assert json.loads(cli(fleet.env, "result", sent, "--timeout", "10").stdout) == {"approved_by": "ann"}

    cli(fleet.env, "start", "approval", "--input", json.dumps(published), "--id", published)
    wait_for(lambda: "AWAITING_EVENT" in cli(fleet.env, "state", published, "--json").stdout)
    woken = cli(fleet.env, "publish-event", "approved", "--key", published, "--payload", '{"by": "bob"}', "--json")
    assert json.loads(woken.stdout) == {"woken": 1}
    assert json.loads(cli(fleet.env, "result", published, "--timeout", "10").stdout) == {"approved_by": "bob"}

    cli(fleet.env, "start", "approval", "--input", '""', "--id", cancelled)
    cancelling = cli(fleet.env, "cancel", cancelled, "--reason", "changed my mind", "--json")
    assert json.loads(cancelling.stdout) == {"workflow_id": cancelled, "cancel": True}
    assert_error(cli(fleet.env, "result", cancelled, "--timeout", "10"), 1, "cancelled: changed my mind")
    assert_error(cli(fleet.env, "resume", cancelled), 2, "not VERSION_MISMATCH")


def test_schedules_from_the_command_line(fleet: Fleet) -> None:
    sid = f"nightly-{uuid.uuid4().hex[:6]}"
    create = [
        "schedule", "create", sid, "adder", "--cron", "0 3 * * *", "--timezone", "Europe/Berlin",
        "--input", '{"a": 1, "b": 2}', "--overlap", "allow_all", "--json",
    ]  # fmt: skip
    created = cli(fleet.env, *create)
    assert created.exit_code == 0, created.stderr
    assert "note:" not in created.stderr
    # a name no dispatcher registered (yet): created, with a note that it waits for one (a typo looks the same)
    unknown = cli(fleet.env, "schedule", "create", f"{sid}-later", "not_deployed_yet", "--every", "1h")
    assert unknown.exit_code == 0, unknown.stderr
    assert "no dispatcher has registered workflow 'not_deployed_yet' yet" in unknown.stderr
    assert cli(fleet.env, "schedule", "delete", f"{sid}-later").exit_code == 0
    info = json.loads(created.stdout)
    assert (info["schedule_id"], info["workflow"], info["cron"], info["timezone"]) == (
        sid, "adder", "0 3 * * *", "Europe/Berlin"
    )  # fmt: skip
    assert len(info["next_runs"]) == 5
    assert all(run.endswith("+00:00") for run in info["next_runs"])
    assert_error(cli(fleet.env, *create), 2, "exists")
    assert_error(cli(fleet.env, "schedule", "create", "x", "adder", "--cron", "0 3 * *"), 2, "5 fields")
    assert_error(cli(fleet.env, "schedule", "create", "x", "adder", "--every", "1h", "--input", '{"a": "one"}'), 2)
    assert_error(cli(fleet.env, "schedule", "create", "x", "adder", "--every", "1h", "--input", "{"), 2, "JSON")

    triggered = cli(fleet.env, "schedule", "trigger", sid, "--json")
    assert triggered.exit_code == 0, triggered.stderr
    run = json.loads(triggered.stdout)["workflow_id"]
    assert run.startswith(f"{sid}-")
    assert cli(fleet.env, "result", run, "--timeout", "10").stdout.strip() == "3"

    backfilled = cli(fleet.env, "schedule", "backfill", sid, "--start", "2026-11-01T00:00:00Z", "--end",
                     "2026-11-03T00:00:00+00:00", "--json")  # fmt: skip
    assert backfilled.exit_code == 0, backfilled.stderr
    backfilled_ids = json.loads(backfilled.stdout)["workflow_ids"]
    assert backfilled_ids == [f"{sid}-2026-11-01T02:00:00Z", f"{sid}-2026-11-02T02:00:00Z"]
    naive = cli(fleet.env, "schedule", "backfill", sid, "--start", "2026-11-01", "--end", "2026-11-02")
    assert_error(naive, 2, "offset")

    paused = json.loads(cli(fleet.env, "schedule", "pause", sid, "--note", "freeze", "--json").stdout)
    assert (paused["paused"], paused["note"], paused["next_runs"]) == (True, "freeze", [])
    listed = json.loads(cli(fleet.env, "schedule", "list", "--json").stdout)
    assert [s["schedule_id"] for s in listed] == [sid]
    assert [f["workflow_id"] for f in listed[0]["recent"]] == [run, *backfilled_ids]  # trigger, then backfill
    shown = cli(fleet.env, "schedule", "show", sid)
    assert shown.exit_code == 0
    assert "freeze" in shown.stdout
    assert "paused" in shown.stdout
    assert json.loads(cli(fleet.env, "schedule", "unpause", sid, "--json").stdout)["paused"] is False
    assert cli(fleet.env, "schedule", "delete", sid).exit_code == 0
    for command in (["show", sid], ["delete", sid], ["trigger", sid], ["pause", sid]):
        assert_error(cli(fleet.env, "schedule", *command), 3, sid)


def test_start_with_a_delay_is_scheduled(fleet: Fleet) -> None:
    started = cli(fleet.env, "start", "adder", "--input", '{"a": 2, "b": 2}', "--delay", "1h", "--json")
    assert started.exit_code == 0, started.stderr
    document = json.loads(started.stdout)
    assert document["status"] == "SCHEDULED"
    assert json.loads(cli(fleet.env, "state", document["workflow_id"], "--json").stdout)["status"] == "SCHEDULED"
    assert cli(fleet.env, "cancel", document["workflow_id"]).exit_code == 0
    soon = cli(fleet.env, "start", "adder", "--input", '{"a": 2, "b": 3}', "--start-at", "2020-01-01T00:00:00Z")
    assert cli(fleet.env, "result", soon.stdout.strip(), "--timeout", "10").stdout.strip() == "5"  # past: at once
    assert_error(cli(fleet.env, "start", "adder", "--start-at", "2030-01-01T00:00"), 2, "offset")
    assert_error(cli(fleet.env, "start", "adder", "--delay", "soon"), 2, "delay")


def test_dead_letter_queue(fleet: Fleet) -> None:
    workflow_id = new_id()
    cli(fleet.env, "start", "parked", "--input", '"broken"', "--id", workflow_id)

    def parked_entry() -> dict[str, Any] | None:
        entries = json.loads(cli(fleet.env, "dlq", "list", "--json").stdout)
        return next((e for e in entries if e["workflow_id"] == workflow_id and e["parked"]), None)

    entry = wait_for(parked_entry)
    assert set(entry) == {"entry_id", "workflow_id", "task", "args", "error", "attempts", "parked", "created_at"}
    shown = json.loads(cli(fleet.env, "dlq", "show", entry["entry_id"], "--json").stdout)
    assert shown["error"]["message"] == "broken"
    assert "cli_app.fragile" in cli(fleet.env, "dlq", "list").stdout
    failing = cli(fleet.env, "dlq", "fail", entry["entry_id"], "--json")
    assert json.loads(failing.stdout) == {"entry_id": entry["entry_id"], "failed": True}
    assert_error(cli(fleet.env, "result", workflow_id, "--timeout", "10"), 1, "broken")

    other = new_id()  # a task that fails without parking: its entry cannot be retried or failed
    cli(fleet.env, "start", "failing", "--input", '"plain"', "--id", other, "--wait")
    plain = next(e for e in json.loads(cli(fleet.env, "dlq", "list", "--json").stdout) if e["workflow_id"] == other)
    assert_error(cli(fleet.env, "dlq", "retry", plain["entry_id"]), 2, "not parked")
    assert_error(cli(fleet.env, "dlq", "fail", plain["entry_id"]), 2, "not parked")
    purged = json.loads(cli(fleet.env, "dlq", "purge", "--yes", "--json").stdout)
    assert purged["purged"] >= 1
    assert_error(cli(fleet.env, "dlq", "show", plain["entry_id"]), 3)


# -- bdurable dev ----------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running: a zombie (ended, not yet reaped by whoever adopted it) is not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def start_dev(tmp_path: Path, *args: str, extra_path: str = "") -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "dev.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BDURABLE_")}
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, str(APPS), os.environ.get("PYTHONPATH")) if p)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bdurable.cli", "dev", *args],
            env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return process, log


def stop_dev(process: subprocess.Popen[bytes], children: list[int]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    for pid in children:
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_dev_runs_a_workflow_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    process, log = start_dev(tmp_path, "--app", "cli_app", "--port", str(port), "--data-dir", str(tmp_path / "r"))
    children: list[int] = []
    try:
        url = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: f"export BDURABLE_REDIS_URL={url}" in log.read_text(), timeout=15)
        roles = ("dispatcher", "scheduler", "reaper", "signal bus")
        wait_for(lambda: all(f"{role} started" in log.read_text() for role in roles), timeout=15)
        wait_for(lambda: "console listening" in log.read_text(), timeout=15)
        workflow_id = new_id()

        def started() -> bool:
            args = ["start", "adder", "--input", '{"a": 3, "b": 4}', "--id", workflow_id, "--json", "--redis-url", url]
            return cli({}, *args).exit_code == 0  # exit 2 until the dispatcher has registered

        wait_for(started, timeout=15)
        assert cli({}, "result", workflow_id, "--redis-url", url, "--timeout", "10").stdout.strip() == "7"
        children = children_of(process.pid)
        assert len(children) == 6  # redis-server, the four roles and the console
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=20) == 0
        output = log.read_text()
        assert "Traceback" not in output
        for role in roles:  # each drained and stopped on its own
            assert f"{role.replace(' ', '-'):<10} |" in output
            assert f"{role} stopped" in output
        assert "web console: http://127.0.0.1:" in output
        assert "console stopped" in output
        assert not [pid for pid in children if alive(pid)]
        with RedisServer(port=port):  # the port is free again: another server can listen on it
            pass
    finally:
        stop_dev(process, children)


def test_dev_killed_leaves_nothing_running(tmp_path: Path) -> None:
    # SIGKILL gives dev no chance to stop anything: its Redis gets SIGTERM from the kernel (it was launched from
    # dev's main thread), and each role and the console see their parent gone and stop, although the pipe their
    # output went to has no reader any more (the first log line used to fail there, and they ran on).
    port = free_port()
    process, log = start_dev(tmp_path, "--port", str(port), "--data-dir", str(tmp_path / "r"))
    children: list[int] = []
    try:
        wait_for(lambda: "console listening" in log.read_text(), timeout=20)
        wait_for(lambda: all(f"{role} started" in log.read_text() for role in ("scheduler", "reaper")), timeout=15)
        children = children_of(process.pid)
        assert len(children) == 5  # redis-server, three roles and the console (no --app: no dispatcher)
        process.kill()
        process.wait(timeout=10)
        wait_for(lambda: not [pid for pid in children if alive(pid)], timeout=15)
    finally:
        stop_dev(process, children)


def test_dev_reports_a_role_that_dies(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text('raise RuntimeError("cannot start")\n')
    port = free_port()
    process, log = start_dev(tmp_path, "--app", "broken_app", "--port", str(port), "--data-dir",
                             str(tmp_path / "r"), extra_path=str(tmp_path))  # fmt: skip
    try:
        assert process.wait(timeout=30) == 1
        output = log.read_text()
        assert "dispatcher exited unexpectedly" in output
        assert "cannot import --app module 'broken_app'" in output
        with RedisServer(port=port):
            pass
    finally:
        stop_dev(process, [])


def test_dev_needs_a_known_app_and_a_free_port(tmp_path: Path) -> None:
    assert_error(cli({}, "dev", "--start", "adder"), 2, "--start needs --app MODULE")
    # Said at once, before anything starts (no Redis, no dispatcher to wait for)
    unknown = cli({}, "dev", "--app", "cli_app", "--start", "nosuch")
    assert_error(unknown, 2, "--start 'nosuch': no workflow of that name in cli_app (workflows defined: adder, ")
    wrong = cli({}, "dev", "--app", "cli_app", "--start", "adder", "--input", '{"a": "one"}')
    assert_error(wrong, 2, "--input: input of adder does not match Numbers")
    assert_error(cli({}, "dev", "--app", "no_such_module_anywhere"), 2, "cannot find --app module")
    with RedisServer() as busy:
        assert_error(cli({}, "dev", "--app", "cli_app", "--port", str(busy.port)), 2, "already in use")


def test_dev_without_an_app_runs_every_role_but_the_dispatcher(tmp_path: Path) -> None:
    """The contract's `bdurable dev [--app MODULE]`: without a module, a local cluster for dispatchers started
    by hand (from another terminal, with the URL dev prints)."""
    port = free_port()
    process, log = start_dev(tmp_path, "--port", str(port), "--data-dir", str(tmp_path / "r"))
    dispatcher: subprocess.Popen[bytes] | None = None
    children: list[int] = []
    try:
        url = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: all(f"{role} started" in log.read_text() for role in ("scheduler", "reaper")), timeout=15)
        assert "no --app: no dispatcher runs" in log.read_text()
        children = children_of(process.pid)
        assert len(children) == 5  # redis-server, three roles and the console
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BDURABLE_")}
        environment.update(PYTHONPATH=str(APPS), BDURABLE_REDIS_URL=url)
        dispatcher = subprocess.Popen(
            [sys.executable, "-m", "bdurable.cli", "dispatcher", "--app", "cli_app"], env=environment,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        workflow_id = new_id()
        wait_for(lambda: cli({}, "start", "adder", "--input", '{"a": 1, "b": 2}', "--id", workflow_id,
                             "--redis-url", url).exit_code == 0, timeout=20)  # fmt: skip
        assert cli({}, "result", workflow_id, "--redis-url", url, "--timeout", "10").stdout.strip() == "3"
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if dispatcher is not None:
            dispatcher.kill()
            dispatcher.wait(timeout=10)
        stop_dev(process, children)


def test_dev_restart_resumes_an_unfinished_workflow(tmp_path: Path) -> None:
    """Ctrl-C mid-workflow loses nothing: the next `dev` on the same data directory finishes it."""
    port = free_port()
    data_dir = str(tmp_path / "r")
    url = f"redis://127.0.0.1:{port}/0"
    process, log = start_dev(tmp_path, "--app", "cli_app", "--port", str(port), "--data-dir", data_dir)
    children: list[int] = []
    try:
        wait_for(lambda: "dispatcher started" in log.read_text(), timeout=15)
        workflow_id = new_id()

        def started() -> bool:
            args = ["start", "progress", "--input", "8", "--id", workflow_id, "--redis-url", url]
            return cli({}, *args).exit_code == 0

        wait_for(started, timeout=15)

        def mid_way() -> bool:  # at least 3 of its 8 steps done (a slow poll may never see exactly 3)
            state = json.loads(cli({}, "state", workflow_id, "--json", "--redis-url", url).stdout)
            return int(state["step"]) >= 3 and state["status"] != "COMPLETED"

        wait_for(mid_way, timeout=15)
        children = children_of(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        stop_dev(process, children)
    process, log = start_dev(tmp_path, "--app", "cli_app", "--port", str(port), "--data-dir", data_dir)
    children = []
    try:
        wait_for(lambda: "dispatcher started" in log.read_text(), timeout=15)
        result = cli({}, "result", workflow_id, "--redis-url", url, "--timeout", "30")
        assert result.exit_code == 0, result.stderr
        assert result.stdout.strip() == '"done"'
        history = json.loads(cli({}, "history", workflow_id, "--json", "--redis-url", url).stdout)
        assert [entry["kind"] for entry in history].count("signal") == 8  # each signal once across the restart
        children = children_of(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        stop_dev(process, children)


@pytest.mark.parametrize("command", ["dispatcher", "scheduler", "reaper", "signal-bus"])
def test_every_role_takes_every_setting_as_an_option_but_the_secrets(command: str) -> None:
    """docs/operations.md: the options mirror the settings; only the secrets come from the environment alone."""
    import dataclasses

    import typer.main

    group = typer.main.get_command(app)
    role = group.commands[command]  # type: ignore[attr-defined]
    options = {opt for param in role.params for opt in param.opts}
    secrets_only = {"console_token", "encryption_keys"}
    dispatcher_only = {"run_cache_bytes"}
    for setting in dataclasses.fields(Settings):
        if setting.name in secrets_only or (setting.name in dispatcher_only and command != "dispatcher"):
            continue
        assert "--" + setting.name.replace("_", "-") in options, f"{command} has no option for {setting.name}"
