"""Security: least-privilege ACL users per role, AUTH and TLS, against real redis-server processes.

The ACL lines under test are read from ``docs/security.md``: the documentation is what is verified. Two
checks hold them: a static one derives, from the sources, every command each role can send (its redis-py
calls, and every Redis command inside the Lua scripts it calls, since Redis checks those against the caller's
ACL too) and demands the documented rights be exactly that; a live one runs every role under its user and
drives workflows end to end (task, sleep, signal, dead-letter retry, events, keyed event, cancellation, a
dead dispatcher reaped), then demands that Redis refused nothing (``ACL LOG`` stays empty).

TLS uses a CA and certificates made at test time in Python (``trustme``; no ``openssl`` command). The server
binary is probed once: if it serves TLS itself (a Redis or Valkey built with TLS, such as Debian's
``redis-server``, which CI's leg on the oldest supported Redis runs these tests against), the TLS tests use its
native TLS; if it does not (the pip-installed ``valkey-server`` of a machine with nothing but Python), TLS
terminates at a TLS front made of the standard library's ``asyncio`` and ``ssl`` (``tls_front.py``: a real
handshake, server certificate verification and mutual TLS, the bytes forwarded to the server's plaintext
loopback port, like stunnel in front of Redis). ``BDURABLE_TEST_TLS=native`` or ``front`` forces one of the two.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import redis.asyncio as aioredis
import security_app
import trustme
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from support import APPS, RoleProcesses, eventually
from tls_front import TlsFront

from bdurable import Client, Settings, Status, Worker, WorkflowCancelledError
from bdurable.embedded import RedisServer, find_redis_server, free_port
from bdurable.keys import Keys
from bdurable.lua import SCRIPT_NAMES, load_scripts
from bdurable.store import connect_redis

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "security.md"
# The modules that talk to Redis for the others: a role's code reaches Redis through their functions.
ACCESS = [REPO / "shared" / "store.py", REPO / "shared" / "reads.py", REPO / "shared" / "lua" / "loader.py"]

# Where each documented user's commands come from. Every role talks to Redis through `bdurable.store` (the
# scripts), `bdurable.reads` and `bdurable.pubsub`; schedules are fired through `bdurable.scheduling` (by the
# scheduler, and by the client's `trigger_schedule`).
ROLE_SOURCES = {
    "bdurable-dispatcher": ["services/dispatcher"],
    "bdurable-scheduler": ["services/scheduler", "shared/scheduling.py"],
    "bdurable-reaper": ["services/reaper"],
    "bdurable-signal-bus": ["services/signal_bus"],
    "bdurable-client": ["shared/client.py", "shared/scheduling.py", "shared/pubsub.py", "shared/cli"],
    "bdurable-ops": ["shared/client.py", "shared/scheduling.py", "shared/pubsub.py", "shared/cli", "shared/doctor.py"],
    "bdurable-console": ["services/console", "shared/client.py", "shared/scheduling.py", "shared/pubsub.py"],
}
KEY_AND_CHANNEL_RULES = ["~{bdurable}", "~{bdurable}:*", "~{bdurable:*", "&{bdurable}:*"]
# Health checks (redis-py's, and /readyz) send PING on every kind of connection.
ALWAYS = {"ping"}
# redis-py calls that send no command of their own (``initialize`` and ``get_primaries`` only act on a
# cluster client: see docs/security.md), and methods whose command is spelt differently.
NOT_COMMANDS = {
    "aclose",
    "close",
    "execute",
    "execute_command",
    "get_message",
    "get_primaries",
    "initialize",
    "pipeline",
    "pubsub",
}
RENAMED = {"config_get": "config|get", "script_load": "script|load"}

LUA_CALL = re.compile(r"redis\.p?call\(\s*['\"](\w+)['\"]")
LUA_FUNCTION = re.compile(r"^(?:local function (\w+)\(|(\w+) = function\()", re.MULTILINE)  # forward-declared too
PY_FUNCTION = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+(\w+)\(", re.MULTILINE)
PY_CALL = re.compile(r"\b(?:redis|_redis|pipe|pubsub|_pubsub|fresh)\.(\w+)\(")
PY_RAW_COMMAND = re.compile(r"execute_command\(\s*['\"](\w+(?: \w+)?)['\"]")  # "FUNCTION LIST" -> function|list
QUOTED = re.compile(r"['\"](\w+)['\"]")
ATTRIBUTE = re.compile(r"\.(\w+)\b")
CALLED = re.compile(r"\b(\w+)\(")  # a module function called by name (the store calls the library loader)


# -- the documented ACLs -----------------------------------------------------------------------------------


def documented_acls() -> dict[str, list[str]]:
    """``user -> rules`` of every ``ACL SETUSER bdurable-...`` line of docs/security.md."""
    acls: dict[str, list[str]] = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"ACL SETUSER (bdurable-[a-z-]+) (.+)", line.strip())
        if match:
            acls[match.group(1)] = match.group(2).split()
    return acls


def granted_commands(rules: list[str]) -> set[str]:
    return {rule[1:] for rule in rules if rule.startswith("+")}


def for_prefix(rules: list[str], prefix: str, password: str) -> list[str]:
    """The documented rules for another prefix and a real password (what the docs tell users to change)."""
    adapted = []
    for rule in rules:
        if rule.startswith(">"):
            rule = f">{password}"
        elif rule[:1] in ("~", "&"):
            rule = rule.replace("{bdurable", "{" + prefix)
        adapted.append(rule)
    return adapted


# -- what the code sends, derived from the sources ---------------------------------------------------------


def _lua_functions(source: str) -> dict[str, str]:
    starts = list(LUA_FUNCTION.finditer(source))
    return {
        (m.group(1) or m.group(2)): source[m.end() : starts[i + 1].start() if i + 1 < len(starts) else len(source)]
        for i, m in enumerate(starts)
    }


def lua_commands(script: str) -> set[str]:
    """Every command a script can send: its own and those of the library functions it calls, transitively
    (the script as production loads it: generated key helpers, the clock, lib.lua, the script)."""
    source = load_scripts()[script].source
    library, _, body = source.partition(f"-- ---- {script}.lua ----")
    functions = _lua_functions(library)
    commands = {c.lower() for c in LUA_CALL.findall(body)}
    todo = {name for name in functions if re.search(rf"\b{name}\(", body)}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        seen.add(name)
        commands |= {c.lower() for c in LUA_CALL.findall(functions[name])}
        todo |= {other for other in functions if other not in seen and re.search(rf"\b{other}\(", functions[name])}
    return commands


def python_commands(text: str) -> set[str]:
    """Commands sent by redis-py calls on the usual receivers (``redis``, ``pipe``, ``pubsub``)."""
    commands = {c.lower().replace(" ", "|") for c in PY_RAW_COMMAND.findall(text)}
    for method in PY_CALL.findall(text):
        if method in NOT_COMMANDS:
            continue
        known = any(hasattr(kind, method) for kind in (aioredis.Redis, aioredis.client.PubSub))
        assert known, f"unknown redis-py call .{method}(): teach tests/test_security.py what it sends"
        commands.add(RENAMED.get(method, method))
    return commands


def _access_functions() -> dict[str, str]:
    functions: dict[str, str] = {}
    for module in ACCESS:
        source = module.read_text(encoding="utf-8")
        starts = list(PY_FUNCTION.finditer(source))
        for i, m in enumerate(starts):
            body = source[m.start() : starts[i + 1].start() if i + 1 < len(starts) else len(source)]
            functions[m.group(1)] = functions.get(m.group(1), "") + body
    return functions


def _access_used(text: str) -> tuple[set[str], set[str]]:
    """``(commands, scripts)`` of the store's and reads' functions that ``text`` calls, followed inside them."""
    functions = _access_functions()
    todo = set(ATTRIBUTE.findall(text)) & set(functions)
    seen: set[str] = set()
    commands: set[str] = set()
    scripts: set[str] = set()
    while todo:
        name = todo.pop()
        seen.add(name)
        commands |= python_commands(functions[name])
        scripts |= set(QUOTED.findall(functions[name])) & set(SCRIPT_NAMES)
        todo |= (set(ATTRIBUTE.findall(functions[name]) + CALLED.findall(functions[name])) & set(functions)) - seen
    return commands, scripts


def required_commands(user: str) -> tuple[set[str], set[str]]:
    """``(commands, scripts)`` the code of that user's role can send and call."""
    text = ""
    for source in ROLE_SOURCES[user]:
        path = REPO / source
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        text += "".join(f.read_text(encoding="utf-8") for f in files)
    used, scripts = _access_used(text)
    scripts |= set(QUOTED.findall(text)) & set(SCRIPT_NAMES)
    commands = ALWAYS | python_commands(text) | used
    for script in scripts:
        commands |= lua_commands(script)
    return commands, scripts


# connection and scripts, then the data commands
FIRST = ["ping", "wait", "fcall", "function|list", "function|load", "evalsha", "script|load"]
# Loading the function library is the dispatchers' right alone: a user who may FUNCTION LOAD may also replace
# the library that every role calls (docs/security.md). The others call it once it is there, and send their
# scripts whole (EVALSHA) when it is not: their FUNCTION LOAD is refused, and that is a supported answer.
LOADS_FUNCTIONS = {"bdurable-dispatcher"}


def granted_to(user: str) -> set[str]:
    """What the documented ACL of ``user`` must grant: what its code sends, minus what it may be refused."""
    commands, _ = required_commands(user)
    return commands if user in LOADS_FUNCTIONS else commands - {"function|load"}


def acl_line(user: str) -> str:
    """The ACL line the code needs, in the layout of docs/security.md."""
    commands = granted_to(user)
    ordered = [c for c in FIRST if c in commands] + sorted(commands - set(FIRST))
    rights = " ".join(f"+{c}" for c in ordered)
    rules = " ".join(KEY_AND_CHANNEL_RULES)
    return f"ACL SETUSER {user} reset on ><password> resetchannels resetkeys {rules} -@all {rights}"


def test_the_documented_acls_grant_exactly_what_each_role_sends() -> None:
    acls = documented_acls()
    assert set(acls) == set(ROLE_SOURCES), "docs/security.md must give one ACL line per user"
    for user, rules in acls.items():
        commands = granted_to(user)
        granted = granted_commands(rules)
        assert granted == commands, (
            f"{user}: missing {sorted(commands - granted)}, not needed {sorted(granted - commands)}.\n"
            f"The code needs:\n{acl_line(user)}"
        )
        structure = [r for r in rules if not r.startswith(("+", ">"))]
        assert structure == ["reset", "on", "resetchannels", "resetkeys", *KEY_AND_CHANNEL_RULES, "-@all"], user
        assert not any(rule.startswith("+@") for rule in rules), f"{user}: no command categories, only commands"


def test_every_role_calls_only_the_packaged_scripts() -> None:
    """The derivation above is only sound if no role sends EVAL (arbitrary Lua), and never deletes, flushes or
    replaces functions: roles call the packaged library (FCALL) or the packaged scripts (EVALSHA)."""
    forbidden = {"eval", "eval_ro", "function|delete", "function|flush", "function|restore", "function|kill"}
    forbidden |= {"script|flush", "script|kill"}
    for user in ROLE_SOURCES:
        commands, _ = required_commands(user)
        assert forbidden.isdisjoint(commands), user
        assert commands >= {"fcall", "function|list", "function|load", "evalsha", "script|load"}, user


# -- a Redis with the documented users ---------------------------------------------------------------------


ADMIN_PASSWORD = secrets.token_hex(16)


@dataclass
class AclUsers:
    """The documented users, created for one test's prefix on a server whose ``default`` user is off."""

    server: RedisServer
    prefix: str
    password: str
    admin: aioredis.Redis
    rules: dict[str, list[str]]

    def url(self, role: str, *, password: str | None = None) -> str:
        secret = quote(password or self.password, safe="")
        return f"redis://bdurable-{role}:{secret}@127.0.0.1:{self.server.port}/0"

    def settings(self, base: Settings, role: str) -> Settings:
        return dataclasses.replace(base, redis_url=self.url(role))

    async def denials(self) -> list[dict[str, Any]]:
        entries = await self.admin.execute_command("ACL", "LOG")
        return [_pairs(entry) for entry in entries]

    async def assert_nothing_refused(self) -> None:
        denials = unexpected_denials(await self.admin.execute_command("ACL", "LOG"))
        assert denials == [], f"Redis refused commands of a role (ACL LOG): {denials}"


def unexpected_denials(acl_log: Any) -> list[dict[str, Any]]:
    """The ACL LOG's refusals, but the one FUNCTION LOAD a process of a role without that right may try (it then
    calls the library a dispatcher loaded, or sends its scripts whole)."""
    return [
        entry for entry in map(_pairs, acl_log)
        if not (entry.get("object") == "function|load" and entry.get("username") not in LOADS_FUNCTIONS)
    ]  # fmt: skip


def _pairs(flat: Any) -> dict[str, Any]:
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[::2], flat[1::2], strict=True))


def server_version(client: redis.Redis) -> tuple[int, ...]:
    info: dict[str, Any] = client.info("server")
    return tuple(int(part) for part in str(info["redis_version"]).split(".")[:2])


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        with redis.Redis(port=server.port, decode_responses=True) as bootstrap:
            bootstrap.execute_command("ACL", "SETUSER", "admin", "on", f">{ADMIN_PASSWORD}", "~*", "&*", "+@all")
            bootstrap.execute_command("ACL", "SETUSER", "default", "off")  # nobody gets in without a user
        yield server


@pytest.fixture
async def acl(acl_server: RedisServer, prefix: str) -> AsyncIterator[AclUsers]:
    admin = connect_redis(f"redis://admin:{ADMIN_PASSWORD}@127.0.0.1:{acl_server.port}/0")
    password = secrets.token_urlsafe(24) + "@:/%"  # reserved characters: the URL must be percent-encoded
    rules = documented_acls()
    with redis.Redis(port=acl_server.port, username="admin", password=ADMIN_PASSWORD) as sync_admin:
        setinfo = ["+client|setinfo"] if server_version(sync_admin) >= (7, 2) else []  # as docs/security.md says
    for user, documented in rules.items():
        await admin.execute_command("ACL", "SETUSER", user, *for_prefix(documented, prefix, password), *setinfo)
    await admin.execute_command("ACL", "LOG", "RESET")
    try:
        yield AclUsers(acl_server, prefix, password, admin, rules)
    finally:
        await admin.aclose()


# -- running roles -----------------------------------------------------------------------------------------


class Running:
    """Roles as ``bdurable.Worker``s of the test's loop, one per role (each under its own settings, hence its
    own user); a worker that stops fails the test at once."""

    def __init__(self) -> None:
        self.watching: dict[asyncio.Task[None], Worker] = {}  # per worker: starts it, then ends if it stops

    def start(self, worker: Worker) -> Worker:
        self.watching[asyncio.create_task(self._watch(worker))] = worker
        return worker

    @staticmethod
    async def _watch(worker: Worker) -> None:
        await worker.start()  # a role that fails to start raises here, with its error
        while worker.running:  # noqa: ASYNC110  # a Worker has a flag, not an event
            await asyncio.sleep(0.05)
        raise RuntimeError("stopped while serving")

    async def within(self, awaitable: Awaitable[Any], timeout: float = 10.0) -> Any:
        work = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait([work, *self.watching], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        work.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await work
        for died in done:  # a worker ended before the work did
            error = died.exception()
            roles = ", ".join(self.watching[died].roles)
            raise AssertionError(f"the {roles} role stopped: {type(error).__name__}: {error}")
        raise AssertionError(f"not done within {timeout}s")

    async def stop(self) -> None:
        failures = []
        for watch, worker in self.watching.items():
            if watch.done():
                failures.append((", ".join(worker.roles), watch.exception()))
            watch.cancel()
        await asyncio.gather(*self.watching, return_exceptions=True)
        await asyncio.gather(*(worker.stop(timeout=30) for worker in self.watching.values()))
        assert not failures, f"roles failed: {failures}"


@asynccontextmanager
async def running() -> AsyncIterator[Running]:
    roles = Running()
    try:
        yield roles
    finally:
        await roles.stop()


def worker(role: str, settings: Settings) -> Worker:
    """One role under ``settings`` (its URL, hence its user); a dispatcher runs ``security_app``."""
    return Worker([security_app], settings=settings, roles=(role,))


def all_roles(roles: Running, settings_for: Callable[[str], Settings]) -> None:
    """The four roles, each with the settings (URL, hence user) ``settings_for(role)`` gives."""
    roles.start(worker("dispatcher", settings_for("dispatcher")))
    roles.start(worker("scheduler", settings_for("scheduler")))
    roles.start(worker("signal_bus", settings_for("signal-bus")))
    roles.start(worker("reaper", settings_for("reaper")))


async def status_of(client: Client, workflow_id: str) -> str | None:
    state = await client.get_state(workflow_id)
    return state.status if state else None


async def drive_every_kind_of_call(client: Client, roles: Running) -> None:
    """Task, sleep, signal, a parked task retried from the DLQ, an event, a keyed event; then a cancellation."""
    token = uuid.uuid4().hex
    handle = await client.start(security_app.guarded, {"token": token, "text": "hello"})
    workflow_id = handle.workflow_id

    async def parked() -> bool:
        return await status_of(client, workflow_id) == Status.PARKED

    await roles.within(eventually(parked, timeout=10))
    [entry] = [e for e in await client.dlq_list() if e.workflow_id == workflow_id]
    await client.dlq_retry(entry.entry_id)
    await handle.send_event("approved", {"by": "u7"})
    await roles.within(eventually(lambda: client.publish_event("paid", {"ok": True}, key=token), timeout=10))
    assert await roles.within(handle.result(timeout=10)) == {
        "loud": "HELLO",
        "recovered": "recovered",
        "approval": {"by": "u7"},
        "payment": {"ok": True},
    }
    assert [(s.name, s.payload) async for s in client.signals(workflow_id)] == [("progress", {"loud": "HELLO"})]
    history = [(e.kind, e.status) for e in await client.history(workflow_id)]
    assert (
        history == [("task", "done"), ("sleep", "done"), ("signal", "done"), ("task", "done")] + [("event", "done")] * 2
    )
    assert workflow_id in [s.workflow_id for s in (await client.list(name="guarded")).items]

    cleanup_token = uuid.uuid4().hex
    cancellable = await client.start(security_app.cancellable, cleanup_token)

    async def waiting() -> bool:
        return await status_of(client, cancellable.workflow_id) == Status.AWAITING_EVENT

    await roles.within(eventually(waiting, timeout=10))
    await cancellable.cancel("security test")
    with pytest.raises(WorkflowCancelledError) as cancelled:
        await roles.within(cancellable.result(timeout=10))
    assert cancelled.value.reason == "security test"
    assert security_app.CALLS[cleanup_token] == ["cleaned"]


# -- ACL: live ---------------------------------------------------------------------------------------------


async def test_every_role_runs_workflows_end_to_end_under_its_documented_acl_user(
    acl: AclUsers, settings: Settings
) -> None:
    async with running() as roles:
        all_roles(roles, lambda role: acl.settings(settings, role))
        async with Client(settings=acl.settings(settings, "client")) as client:
            await drive_every_kind_of_call(client, roles)
    await acl.assert_nothing_refused()


async def test_the_console_reads_and_acts_under_its_documented_acl_user(acl: AclUsers, settings: Settings) -> None:
    """Every page and API read of the web console, a live stream, and every action (schedules' too), as
    ``bdurable-console``."""
    from console_kit import bearer, running_console

    async with running() as roles:
        all_roles(roles, lambda role: acl.settings(settings, role))
        async with Client(settings=acl.settings(settings, "client")) as client:
            token = uuid.uuid4().hex
            guarded = await client.start(security_app.guarded, {"token": token, "text": "hi"})
            waiting = await client.start(security_app.cancellable, uuid.uuid4().hex)

            async def parked() -> bool:
                return await status_of(client, guarded.workflow_id) == Status.PARKED

            await roles.within(eventually(parked, timeout=10))
            await client.create_schedule("nightly", security_app.short, "x", cron="0 3 * * *")
            async with running_console(acl.settings(settings, "console")) as web:
                for path in ("/", "/workflows", "/workflows?status=PARKED", f"/workflows?prefix={token[:4]}", "/dlq",
                             f"/workflows/{guarded.workflow_id}", "/api/overview", "/api/dlq",
                             f"/api/workflows/{guarded.workflow_id}/history", "/schedules", "/api/schedules",
                             "/api/schedules/nightly", "/readyz", "/metrics"):  # fmt: skip
                    response = await web.http.get(path)
                    assert response.status_code == 200, (path, response.text)
                for action in ("pause", "unpause", "trigger"):
                    response = await web.http.post(f"/api/schedules/nightly/{action}", headers=bearer())
                    assert response.status_code == 200, (action, response.text)
                run = (await web.http.get("/api/schedules/nightly")).json()["recent"][0]["workflow_id"]
                assert await roles.within(client.result(run, timeout=10)) == "X"
                async with web.http.stream("GET", f"/api/workflows/{guarded.workflow_id}/stream") as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("event: status"):
                            break
                [entry] = (await web.http.get("/api/dlq")).json()
                assert (await web.http.post(f"/api/dlq/{entry['entry_id']}/retry", headers=bearer())).status_code == 200
                event = {"name": "approved", "payload": {"by": "console"}}
                sent = await web.http.post(f"/api/workflows/{guarded.workflow_id}/events", json=event, headers=bearer())
                assert sent.status_code == 200
                cancelled = await web.http.post(f"/api/workflows/{waiting.workflow_id}/cancel", headers=bearer())
                assert cancelled.status_code == 200
                assert (await web.http.post("/api/dlq/purge", headers=bearer())).status_code == 200
                with pytest.raises(WorkflowCancelledError):
                    await roles.within(waiting.result(timeout=10))
    await acl.assert_nothing_refused()


async def test_a_dead_dispatcher_is_reaped_under_the_reaper_user(
    acl: AclUsers, settings: Settings, tmp_path: Path
) -> None:
    """A real dispatcher process (the CLI, under its ACL user) is SIGKILLed holding a task; the reaper recovers it."""
    marker = tmp_path / "holding"
    processes = RoleProcesses(acl.settings(settings, "dispatcher"), tmp_path)
    try:
        doomed = processes.start("dispatcher", "--app", "security_app", SECURITY_APP_HOLD="1")
        async with running() as roles:
            reaper = roles.start(worker("reaper", acl.settings(settings, "reaper")))
            roles.start(worker("scheduler", acl.settings(settings, "scheduler")))
            async with Client(settings=acl.settings(settings, "client")) as client:
                handle = await client.start(security_app.rescued, str(marker))
                await roles.within(eventually(marker.exists, timeout=10))
                os.killpg(doomed.pid, signal.SIGKILL)
                doomed.wait(timeout=10)
                roles.start(worker("dispatcher", acl.settings(settings, "dispatcher")))
                assert await roles.within(handle.result(timeout=10), timeout=12) == "rescued"
            assert (reaper.sample("bdurable_reaped_workers_total") or 0) >= 1
    finally:
        processes.stop_all()
    log = processes.log_of(doomed)
    assert "NOPERM" not in log, log
    await acl.assert_nothing_refused()


def refused() -> AbstractContextManager[Any]:
    """An ACL refusal: ``NOPERM`` for a command's own keys and channels; inside a script, Redis 7.0 words it
    without the code (the script fails with "The user executing the script can't access ..."). Redis 7.2 and
    Valkey word it "No permissions to access a key" (redis-py strips the ``NOPERM`` code from the message)."""
    return pytest.raises(ResponseError, match=r"NOPERM|[Nn]o permissions|can't (access|publish)")


def probe_command(granted: set[str]) -> tuple[str, ...]:
    """A read command this user may send, as ``(command, *arguments after the key)``."""
    for command in (("get",), ("hget", "field"), ("llen",), ("zcard",), ("exists",), ("hgetall",)):
        if command[0] in granted:
            return command
    raise AssertionError(f"no probe command among {sorted(granted)}")


async def test_role_users_cannot_reach_keys_channels_or_commands_outside_their_prefix(acl: AclUsers) -> None:
    other = f"o{uuid.uuid4().hex[:8]}"
    ours, theirs = Keys(acl.prefix), Keys(other)
    inside_key, inside_channel = ours.registry, ours.workflow_channel("probe")
    outside_channel = theirs.workflow_channel("probe")
    # another prefix's keys, an application's key, and a look-alike of ours without the hash tag's braces
    outside_keys = ["plain-application-key", theirs.registry, theirs.shard(0).wf("x"), f"{acl.prefix}:0:wf:x"]
    for user, rules in acl.rules.items():
        granted = granted_commands(rules)
        async with connect_redis(acl.url(user.removeprefix("bdurable-"))) as conn:
            command, *rest = probe_command(granted)
            await conn.execute_command(command, inside_key, *rest)
            for key in outside_keys:
                with refused():
                    await conn.execute_command(command, key, *rest)
            # Scripts: the declared keys, and the keys and channels a script touches, are checked as well.
            reader = await conn.script_load(f"return redis.call('{command}', KEYS[1], unpack(ARGV))")
            await conn.evalsha(reader, 1, inside_key, *rest)
            with refused():
                await conn.evalsha(reader, 1, outside_keys[0], *rest)
            sneaky = await conn.script_load(f"return redis.call('{command}', ARGV[1])")
            with refused():
                await conn.evalsha(sneaky, 1, inside_key, outside_keys[0])
            if "publish" in granted:
                publisher = await conn.script_load("return redis.call('PUBLISH', ARGV[1], 'x')")
                await conn.evalsha(publisher, 1, inside_key, inside_channel)
                with refused():
                    await conn.evalsha(publisher, 1, inside_key, outside_channel)
            for forbidden in (
                ("FLUSHALL",),
                ("KEYS", "*"),
                ("SCAN", "0"),
                ("CONFIG", "SET", "appendonly", "no"),
                ("SCRIPT", "FLUSH"),
                ("EVAL", "return 1", "0"),
                ("ACL", "LIST"),
                ("MONITOR",),
                ("SET", "plain-application-key", "x"),
            ):
                with refused():
                    await conn.execute_command(*forbidden)
        if "subscribe" in granted:
            async with connect_redis(acl.url(user.removeprefix("bdurable-"))) as conn:
                pubsub = conn.pubsub()
                await pubsub.subscribe(inside_channel)
                confirmation = await pubsub.get_message(timeout=5)
                assert confirmation is not None
                assert confirmation["type"] == "subscribe"
                await pubsub.subscribe(outside_channel)
                with refused():
                    await pubsub.get_message(timeout=5)
                await pubsub.aclose()


async def test_a_wrong_password_is_refused_and_never_printed(acl: AclUsers, settings: Settings) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    with pytest.raises(AuthenticationError):
        async with Client(settings=dataclasses.replace(settings, redis_url=acl.url("client", password=wrong))):
            pass
    port = acl.server.port
    for url in (
        acl.url("client", password=wrong),
        # redis-py also reads a password from the query string: as secret there
        f"redis://127.0.0.1:{port}/0?username=bdurable-client&password={wrong}",
        f"redis://bdurable-client@127.0.0.1:{port}/0?db=0&password={wrong}",
    ):
        done = run_cli(["state", "some-id"], BDURABLE_REDIS_URL=url, prefix=acl.prefix)
        assert done.returncode == 4, done.stderr
        assert wrong not in done.stderr + done.stdout
        assert "***" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def run_cli(args: list[str], *, prefix: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, BDURABLE_PREFIX=prefix, PYTHONPATH=str(APPS), **env)
    return subprocess.run(
        [sys.executable, "-m", "bdurable.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_doctor_needs_the_ops_user_and_clients_work_from_the_cli(acl: AclUsers) -> None:
    ops = run_cli(["doctor", "--json"], BDURABLE_REDIS_URL=acl.url("ops"), prefix=acl.prefix)
    assert ops.returncode == 0, ops.stdout + ops.stderr
    report = json.loads(ops.stdout)
    assert report["unchecked"] == [], report
    assert acl.password not in ops.stdout
    client = run_cli(["doctor", "--json"], BDURABLE_REDIS_URL=acl.url("client"), prefix=acl.prefix)
    assert client.returncode == 1, client.stdout + client.stderr
    assert any("refused" in item for item in json.loads(client.stdout)["unchecked"])
    listing = run_cli(["list", "--json"], BDURABLE_REDIS_URL=acl.url("client"), prefix=acl.prefix)
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)["items"] == []
    denied = {(d["username"], d["object"]) for d in await acl.denials()}
    assert denied == {("bdurable-client", "info"), ("bdurable-client", "config|get")}, denied


# -- remote code: nothing read from Redis is run -----------------------------------------------------------


async def test_starting_by_name_never_fetches_a_remote_schema_reference(client: Client, settings: Settings) -> None:
    """A writer of the registry key must not make clients open connections (SSRF) through a ``$ref``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(3)
    connections: list[socket.socket] = []

    def accept() -> None:
        with suppress(OSError):
            conn, _ = listener.accept()
            connections.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    keys = Keys(settings.prefix)
    entry = {"name": "forged", "version": "1", "queue": "default", "schema": {"$ref": f"http://127.0.0.1:{port}/x"}}
    redis_client = client.store.redis
    await redis_client.hset(keys.registry, "forged@1", json.dumps(entry))
    await redis_client.zadd(keys.versions("forged"), {"1": 1})
    with suppress(Exception):
        await client.start("forged", {"any": "input"}, workflow_id=f"forged-{uuid.uuid4().hex}")
    listener.close()
    thread.join(timeout=4)
    assert connections == [], "the client fetched a $ref named by data read from Redis"


# -- TLS ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

    directory: Path

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.path("ca.pem"))
        if client_cert:
            context.load_cert_chain(self.path("client.pem"), self.path("client.key"))
        return context


def make_pki(directory: Path) -> Pki:
    """The CA and certificates as PEM files (what redis-server's ``tls-*`` options and rediss:// URLs take)."""
    ca = trustme.CA(organization_name="b-durable test CA")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for name, identities in (("server", ("127.0.0.1", "localhost")), ("client", ("bdurable-client",))):
        leaf = ca.issue_cert(*identities, common_name=name)
        leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))
        for index, pem in enumerate(leaf.cert_chain_pems):
            pem.write_to_path(str(directory / f"{name}.pem"), append=index > 0)
    return Pki(directory)


def answers_tls_ping(port: int, pki: Pki) -> bool:
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw,
            pki.context().wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class NativeTlsServer(RedisServer):
    """A server that only listens with TLS itself (``--port 0``): its readiness probe speaks TLS too."""

    pki: Pki | None = None

    def _answers(self) -> bool:
        assert self.pki is not None
        return answers_tls_ping(self.port, self.pki)


@dataclass
class TlsServer:
    """A server reached only with TLS on ``port``: its own TLS, or the stdlib TLS front before it."""

    port: int
    how: str
    server: RedisServer
    front: TlsFront | None = None

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
        self.server.stop()


_TLS_MODES: dict[str, str] = {}


def tls_mode(pki: Pki) -> str:
    """``native`` when the server binary serves TLS itself, else ``front``; probed once per binary."""
    forced = os.environ.get("BDURABLE_TEST_TLS", "")
    if forced:
        assert forced in ("native", "front"), f"BDURABLE_TEST_TLS is native or front, not {forced!r}"
        return forced
    binary = find_redis_server()
    if binary not in _TLS_MODES:
        probe = native_tls_server(pki, auth_clients="optional")
        try:
            probe.start(timeout=5)
        except (RuntimeError, TimeoutError):
            _TLS_MODES[binary] = "front"
        else:
            _TLS_MODES[binary] = "native"
        finally:
            probe.stop()
    return _TLS_MODES[binary]


def native_tls_server(pki: Pki, *, auth_clients: str) -> NativeTlsServer:
    port = free_port()
    return NativeTlsServer(
        port=port,
        appendonly=False,
        pki=pki,
        extra=[
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", pki.path("server.pem"),
            "--tls-key-file", pki.path("server.key"),
            "--tls-ca-cert-file", pki.path("ca.pem"),
            "--tls-auth-clients", auth_clients,
        ],
    )  # fmt: skip


def start_tls_server(pki: Pki, *, auth_clients: str) -> TlsServer:
    binary = find_redis_server()
    if tls_mode(pki) == "native":
        native = native_tls_server(pki, auth_clients=auth_clients)
        try:
            native.start()
        except (RuntimeError, TimeoutError) as exc:
            native.stop()
            pytest.fail(f"{binary} cannot serve TLS ({exc}); unset BDURABLE_TEST_TLS=native to use the TLS front")
        return TlsServer(native.port, f"native TLS of {binary}", native)
    plain = RedisServer(appendonly=False).start()
    front = TlsFront(
        plain.port, cert=pki.path("server.pem"), key=pki.path("server.key"), ca=pki.path("ca.pem"),
        auth_clients=auth_clients,
    )  # fmt: skip
    try:
        front.start()
        assert answers_tls_ping(front.port, pki), f"the TLS front does not reach {binary}: {front.errors()}"
    except BaseException:
        front.stop()
        plain.stop()
        raise
    return TlsServer(front.port, f"the stdlib TLS front (tls_front.py) before {binary}", plain, front)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[TlsServer]:
    server = start_tls_server(pki, auth_clients="optional")
    print(f"TLS served by {server.how}")
    try:
        yield server
    finally:
        server.stop()


def tls_url(server: TlsServer, query: str, credentials: str = "") -> str:
    return f"rediss://{credentials}127.0.0.1:{server.port}/0?{query}"


async def test_workflows_run_end_to_end_over_tls(tls_server: TlsServer, pki: Pki, settings: Settings) -> None:
    verified = tls_url(tls_server, f"ssl_cert_reqs=required&ssl_ca_certs={quote(pki.path('ca.pem'))}")
    shortest = tls_url(tls_server, f"ssl_ca_certs={quote(pki.path('ca.pem'))}")  # verification is the default
    async with running() as roles:
        all_roles(roles, lambda _: dataclasses.replace(settings, redis_url=verified))
        async with Client(settings=dataclasses.replace(settings, redis_url=shortest)) as client:
            await drive_every_kind_of_call(client, roles)
            handle = await client.start(security_app.short, "tls")
            assert await roles.within(handle.result(timeout=10)) == "TLS"


async def test_tls_refuses_plaintext_and_unverified_servers(tls_server: TlsServer, settings: Settings) -> None:
    for url, why in (
        (f"redis://127.0.0.1:{tls_server.port}/0", "plaintext to a TLS port"),
        (tls_url(tls_server, "ssl_cert_reqs=required"), "a CA the system does not trust"),
    ):
        began = time.monotonic()
        with pytest.raises(RedisConnectionError):
            async with Client(settings=dataclasses.replace(settings, redis_url=url)):
                pass
        assert time.monotonic() - began < 10, why
    url = tls_url(tls_server, "ssl_cert_reqs=required")
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        async with Client(settings=dataclasses.replace(settings, redis_url=url)):
            pass


async def test_mutual_tls_with_acl_users(pki: Pki, settings: Settings) -> None:
    """``tls-auth-clients yes``: a client certificate is required, and the URL's user picks the ACL user."""
    server = start_tls_server(pki, auth_clients="yes")
    print(f"TLS served by {server.how}")
    try:
        files = f"ssl_ca_certs={quote(pki.path('ca.pem'))}"
        cert = f"&ssl_certfile={quote(pki.path('client.pem'))}&ssl_keyfile={quote(pki.path('client.key'))}"
        password = secrets.token_hex(16)
        async with connect_redis(tls_url(server, files + cert)) as admin:
            info = await admin.info("server")
            version = tuple(int(part) for part in str(info["redis_version"]).split(".")[:2])
            setinfo = ["+client|setinfo"] if version >= (7, 2) else []  # as docs/security.md says
            for user, rules in documented_acls().items():
                await admin.execute_command(
                    "ACL", "SETUSER", user, *for_prefix(rules, settings.prefix, password), *setinfo
                )

            def settings_for(role: str) -> Settings:
                url = tls_url(server, files + cert, credentials=f"bdurable-{role}:{password}@")
                return dataclasses.replace(settings, redis_url=url)

            async with running() as roles:
                roles.start(worker("dispatcher", settings_for("dispatcher")))
                roles.start(worker("scheduler", settings_for("scheduler")))
                async with Client(settings=settings_for("client")) as client:
                    handle = await client.start(security_app.short, "mutual")
                    assert await roles.within(handle.result(timeout=10)) == "MUTUAL"
            assert unexpected_denials(await admin.execute_command("ACL", "LOG")) == []
        no_cert = tls_url(server, files, credentials=f"bdurable-client:{password}@")
        with pytest.raises(RedisConnectionError):
            async with Client(settings=dataclasses.replace(settings, redis_url=no_cert)):
                pass
    finally:
        server.stop()
