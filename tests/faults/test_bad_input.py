"""Bad input through the client and the CLI: each is refused with a precise error (CLI: exit 2 bad input,
3 not found, 4 Redis unreachable; one ``error:`` line, no traceback), and Redis is left byte-for-byte as
it was (a DUMP of every key of the prefix before and after)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fault_app
import pytest
import redis.asyncio as aioredis
from faultkit import Fleet, report, snapshot, statuses, wait_finished
from support import eventually, within

from bdurable import (
    Client,
    DurableError,
    InvalidInputError,
    PayloadTooLargeError,
    Settings,
    UnknownWorkflowError,
    WorkflowAlreadyExistsError,
    WorkflowNotFoundError,
)
from bdurable.errors import DeadLetterNotFoundError

BIG = "x" * (1024 * 1024 + 10)  # over the default 1 MiB payload limit
UNREACHABLE = "redis://127.0.0.1:1/0"


async def _existing_state(fleet: Fleet, client: Client, raw: aioredis.Redis, prefix: str) -> dict[str, str]:
    """Workflows in several states, then every role stopped: nothing changes Redis but the test."""
    fleet.support_roles()
    dispatcher = fleet.dispatcher()
    ids = {"done": "bad-input-done", "waiting": "bad-input-waiting", "sleeping": "bad-input-sleeping"}
    await client.start(fault_app.five_steps, {"delay": 0.0}, workflow_id=ids["done"])
    await client.start(fault_app.waiter, {}, workflow_id=ids["waiting"])
    await client.start(fault_app.sleeper, {"seconds": 3600}, workflow_id=ids["sleeping"])
    assert (await wait_finished(raw, prefix, [ids["done"]], timeout=20))[ids["done"]] == "COMPLETED"

    async def settled() -> bool:
        found = await statuses(raw, prefix, [ids["waiting"], ids["sleeping"]])
        return found == {ids["waiting"]: "AWAITING_EVENT", ids["sleeping"]: "SLEEPING"}

    await eventually(settled, timeout=15)
    for process in [dispatcher, *fleet.roles.values()]:
        assert fleet.stop(process) == 0  # SIGTERM: each drains and leaves
    return ids


async def _client_cases(client: Client, ids: dict[str, str]) -> list[tuple[str, Callable[[], Awaitable[Any]], Any]]:
    done, waiting = ids["done"], ids["waiting"]
    return [
        ("start unknown name", lambda: client.start("no_such_workflow", {}), UnknownWorkflowError),
        (
            "start unknown version",
            lambda: client.start("five_steps", {"delay": 1}, version="9.9"),
            UnknownWorkflowError,
        ),
        ("start wrong type", lambda: client.start(fault_app.five_steps, {"delay": "slow"}), InvalidInputError),
        ("start missing field", lambda: client.start(fault_app.five_steps, {}), InvalidInputError),
        ("start by name wrong type", lambda: client.start("five_steps", {"delay": "slow"}), InvalidInputError),
        ("start by name not an object", lambda: client.start("five_steps", [1, 2]), InvalidInputError),
        ("start oversized", lambda: client.start(fault_app.waiter, {"pad": BIG}), PayloadTooLargeError),
        ("start not JSON-able", lambda: client.start(fault_app.waiter, {"x": object()}), TypeError),
        ("start NaN", lambda: client.start(fault_app.waiter, {"x": float("nan")}), TypeError),
        (
            "start id of other name",
            lambda: client.start(fault_app.waiter, {}, workflow_id=done),
            WorkflowAlreadyExistsError,
        ),
        ("start empty id", lambda: client.start(fault_app.waiter, {}, workflow_id=""), ValueError),
        ("start long id", lambda: client.start(fault_app.waiter, {}, workflow_id="x" * 300), ValueError),
        ("start id with newline", lambda: client.start(fault_app.waiter, {}, workflow_id="a\nb"), ValueError),
        ("send_event unknown id", lambda: client.send_event("no-such-id", "go", {}), WorkflowNotFoundError),
        ("send_event finished", lambda: client.send_event(done, "go", {}), WorkflowNotFoundError),
        ("send_event oversized", lambda: client.send_event(waiting, "go", BIG), PayloadTooLargeError),
        ("send_event bad name", lambda: client.send_event(waiting, "bad\nname", {}), ValueError),
        ("send_event empty name", lambda: client.send_event(waiting, "", {}), ValueError),
        ("send_event not JSON-able", lambda: client.send_event(waiting, "go", object()), TypeError),
        ("publish_event empty key", lambda: client.publish_event("go", {}, key=""), ValueError),
        ("publish_event oversized", lambda: client.publish_event("go", BIG, key="k"), PayloadTooLargeError),
        ("cancel unknown id", lambda: client.cancel("no-such-id"), WorkflowNotFoundError),
        ("cancel finished", lambda: client.cancel(done), DurableError),
        ("result unknown id", lambda: client.result("no-such-id", timeout=2), WorkflowNotFoundError),
        ("history unknown id", lambda: client.history("no-such-id"), WorkflowNotFoundError),
        ("resume unknown id", lambda: client.resume("no-such-id"), WorkflowNotFoundError),
        ("resume not halted", lambda: client.resume(waiting), DurableError),
        ("list bad status", lambda: client.list(status="BOGUS"), ValueError),
        ("list bad limit", lambda: client.list(limit=0), ValueError),
        ("list bad cursor", lambda: client.list(cursor="garbage"), ValueError),
        ("dlq_show unknown", lambda: client.dlq_show("0-999"), DeadLetterNotFoundError),
        ("dlq_show garbage", lambda: client.dlq_show("garbage"), DeadLetterNotFoundError),
        ("dlq_retry unknown", lambda: client.dlq_retry("0-999"), DeadLetterNotFoundError),
        ("dlq_fail unknown", lambda: client.dlq_fail("7-1"), DeadLetterNotFoundError),
    ]


def _cli_cases(
    ids: dict[str, str], big_file: Path, big_string: Path
) -> list[tuple[str, list[str], dict[str, str], int, str]]:
    """(label, arguments, extra environment, expected exit code, a word the error line must contain)."""
    done, waiting = ids["done"], ids["waiting"]
    return [
        ("start malformed JSON", ["start", "five_steps", "--input", "{bad"], {}, 2, "JSON"),
        ("start wrong type", ["start", "five_steps", "--input", '{"delay": "slow"}'], {}, 2, "delay"),
        ("start not an object", ["start", "five_steps", "--input", "[1]"], {}, 2, "invalid"),
        ("start unknown name", ["start", "no_such_workflow"], {}, 2, "no_such_workflow"),
        ("start unknown version", ["start", "five_steps", "--version", "9.9", "--input", '{"delay": 1}'], {}, 2, "9.9"),
        ("start missing file", ["start", "waiter", "--input", "@/nonexistent/input.json"], {}, 2, "input.json"),
        ("start oversized", ["start", "waiter", "--input", f"@{big_file}"], {}, 2, "bytes"),
        ("start oversized, wrong type", ["start", "waiter", "--input", f"@{big_string}"], {}, 2, "object"),
        ("start id of other name", ["start", "sleeper", "--id", done, "--input", '{"seconds": 1}'], {}, 2, done),
        ("start long id", ["start", "waiter", "--id", "x" * 300], {}, 2, "256"),
        ("start bad timeout", ["start", "waiter", "--wait", "--timeout", "banana"], {}, 2, "banana"),
        ("state unknown", ["state", "no-such-id"], {}, 3, "no-such-id"),
        ("result unknown", ["result", "no-such-id"], {}, 3, "no-such-id"),
        ("history unknown", ["history", "no-such-id"], {}, 3, "no-such-id"),
        ("watch unknown", ["watch", "no-such-id"], {}, 3, "no-such-id"),
        ("cancel unknown", ["cancel", "no-such-id"], {}, 3, "no-such-id"),
        ("resume unknown", ["resume", "no-such-id"], {}, 3, "no-such-id"),
        ("send-event unknown", ["send-event", "no-such-id", "go"], {}, 3, "no-such-id"),
        ("send-event finished", ["send-event", done, "go"], {}, 3, done),
        ("send-event malformed JSON", ["send-event", waiting, "go", "--payload", "{bad"], {}, 2, "JSON"),
        ("send-event oversized", ["send-event", waiting, "go", "--payload", f"@{big_file}"], {}, 2, "bytes"),
        ("cancel finished", ["cancel", done], {}, 2, done),
        ("resume not halted", ["resume", waiting], {}, 2, "VERSION_MISMATCH"),
        ("publish-event no key", ["publish-event", "go"], {}, 2, "key"),
        ("publish-event malformed JSON", ["publish-event", "go", "--key", "k", "--payload", "{bad"], {}, 2, "JSON"),
        ("list bad status", ["list", "--status", "BOGUS"], {}, 2, "BOGUS"),
        ("list bad limit", ["list", "--limit", "0"], {}, 2, "limit"),
        ("result bad timeout", ["result", waiting, "--timeout", "banana"], {}, 2, "banana"),
        ("dlq show unknown", ["dlq", "show", "0-999"], {}, 3, "0-999"),
        ("dlq retry unknown", ["dlq", "retry", "0-999"], {}, 3, "0-999"),
        ("dlq fail unknown", ["dlq", "fail", "0-999"], {}, 3, "0-999"),
        ("state unreachable", ["state", done, "--redis-url", UNREACHABLE], {}, 4, "Redis"),
        ("start unreachable", ["start", "waiter"], {"BDURABLE_REDIS_URL": UNREACHABLE}, 4, "Redis"),
        (
            "bad retention (dispatcher)",
            ["dispatcher", "--app", "fault_app"],
            {"BDURABLE_RETENTION": "banana"},
            2,
            "banana",
        ),
        ("bad retention option", ["scheduler", "--retention", "banana"], {}, 2, "banana"),
        ("bad heartbeat (reaper)", ["reaper"], {"BDURABLE_HEARTBEAT_TIMEOUT": "0.1"}, 2, "heartbeat"),
        ("bad interval (reaper)", ["reaper", "--heartbeat-interval", "-1s"], {}, 2, "heartbeat"),
        ("bad payload size (bus)", ["signal-bus"], {"BDURABLE_MAX_PAYLOAD": "lots"}, 2, "lots"),
        ("bad prefix (scheduler)", ["scheduler"], {"BDURABLE_PREFIX": "bad prefix"}, 2, "prefix"),
        ("bad log level (bus)", ["signal-bus"], {"BDURABLE_LOG_LEVEL": "loud"}, 2, "loud"),
        ("bad wait replicas", ["dispatcher", "--app", "fault_app"], {"BDURABLE_WAIT_REPLICAS": "-1"}, 2, "replicas"),
        ("unknown app module", ["dispatcher", "--app", "no_such_module"], {}, 2, "no_such_module"),
        ("zero concurrency", ["dispatcher", "--app", "fault_app", "--concurrency", "0"], {}, 2, "concurrency"),
    ]


def _usage_error(err: str) -> bool:
    """Typer's own usage errors (missing option, value out of range): a boxed message, exit 2."""
    return "Try 'bdurable" in err and "Error" in err


async def _run_cli(args: list[str], env: dict[str, str], limit: asyncio.Semaphore) -> tuple[int, str, str]:
    async with limit:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bdurable.cli", *args,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            out, err = await within(30, process.communicate())
        except TimeoutError:
            process.kill()
            out, err = await process.communicate()
            return -1, out.decode(errors="replace"), "still running after 30 s: " + err.decode(errors="replace")
        return process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


@pytest.mark.timeout(120)
async def test_bad_input_is_refused_precisely_and_changes_nothing(
    fleet: Fleet, client: Client, raw: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    prefix = settings.prefix
    ids = await _existing_state(fleet, client, raw, prefix)
    before = await snapshot(settings.redis_url, prefix)
    assert len(before) > 10
    began = time.monotonic()

    # The Python client.
    wrong: dict[str, str] = {}
    for label, call, expected in await _client_cases(client, ids):
        try:
            await call()
        except Exception as exc:
            if not isinstance(exc, expected):
                wrong[label] = f"raised {type(exc).__name__}: {exc} (expected {expected.__name__})"
            elif not str(exc).strip():
                wrong[label] = f"{type(exc).__name__} without a message"
        else:
            wrong[label] = f"no error (expected {expected.__name__})"
    same_id = await client.start(fault_app.five_steps, {"delay": 9.0}, workflow_id=ids["done"])
    if same_id.status != "COMPLETED":
        wrong["start duplicate id"] = f"returned status {same_id.status}, expected the existing run (COMPLETED)"
    assert await client.get_state("no-such-id") is None
    assert await client.publish_event("nobody-waits", {"x": 1}, key="k") == 0

    # The CLI.
    big_file = tmp_path / "big.json"
    big_file.write_text(f'{{"pad": "{BIG}"}}')
    big_string = tmp_path / "big-string.json"
    big_string.write_text(f'"{BIG}"')
    env = fleet.processes.env()
    limit = asyncio.Semaphore(4)
    cases = _cli_cases(ids, big_file, big_string)
    results = await asyncio.gather(*(_run_cli(args, {**env, **extra}, limit) for _, args, extra, _, _ in cases))
    for (label, _, _, code, word), (got, _out, err) in zip(cases, results, strict=True):
        lines = [line for line in err.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        if got != code:
            wrong[f"cli {label}"] = f"exit {got} (expected {code}): {last[:200]}"
        elif "Traceback" in err:
            wrong[f"cli {label}"] = f"a traceback: {err[-300:]!r}"
        elif not last.startswith("error:") and not _usage_error(err):
            wrong[f"cli {label}"] = f"not one error line: {err[-300:]!r}"
        elif word.lower() not in err.lower():
            wrong[f"cli {label}"] = f"the error does not mention {word!r}: {last[:200]}"
        elif len(err) > 1000:
            wrong[f"cli {label}"] = f"a {len(err)}-character error message: {last[:120]}..."
    code, out, err = await _run_cli(
        ["start", "five_steps", "--id", ids["done"], "--input", '{"delay": 9}', "--json"], env, limit
    )
    if code != 0 or '"COMPLETED"' not in out:
        wrong["cli start duplicate id"] = f"exit {code}: {out[-200:]} {err[-200:]}"

    after = await snapshot(settings.redis_url, prefix)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    report(
        "bad_input",
        {
            "client_cases": len(await _client_cases(client, ids)) + 3,
            "cli_cases": len(cases) + 1,
            "keys_compared": len(before),
            "keys_changed": changed,
            "wrong": wrong,
            "seconds": round(time.monotonic() - began, 1),
        },
    )
    assert not changed, f"bad input changed Redis: {changed}"
    assert not wrong, "\n".join(f"{k}: {v}" for k, v in wrong.items())
    assert os.environ.get("BDURABLE_PREFIX") != prefix  # the test process itself never pointed at this prefix
