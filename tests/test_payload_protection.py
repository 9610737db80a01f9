"""Payload protection end to end (docs/security.md, "Payload encryption"): with BDURABLE_ENCRYPTION_KEYS set, no
payload is readable anywhere in Redis; a tampered ciphertext fails clearly; keys rotate without losing a run;
processes without the keys show "<encrypted>" rather than fail."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import protection_app
import pytest
from support import APPS, InProcessRoles, eventually, status_is, token

from bdurable import (
    Client,
    PayloadIntegrityError,
    Settings,
    Status,
    WorkflowFailedError,
)
from bdurable.keyring import Keyring
from bdurable.payloads import ENCRYPTED, MARKER, UNAVAILABLE, UNREADABLE


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def key_id(key: str) -> str:
    return Keyring.from_texts([key]).ids[0]


def with_keys(settings: Settings, *keys: str) -> Settings:
    return dataclasses.replace(settings, encryption_keys=keys)


async def everything_in_redis(client: Client) -> list[tuple[str, str]]:
    """Every key of the test's prefix and every value it holds, whatever its type, as text."""
    redis = client.store.redis
    found: list[tuple[str, str]] = []
    async for key in redis.scan_iter(match=f"*{client.settings.prefix}*", count=500):
        kind = await redis.type(key)
        if kind == "none":
            continue  # gone since the scan saw it (a wake-up token taken, a processing hash emptied)
        if kind == "string":
            values: Any = [await redis.get(key)]
        elif kind == "hash":
            values = [part for pair in (await redis.hgetall(key)).items() for part in pair]
        elif kind == "list":
            values = await redis.lrange(key, 0, -1)
        elif kind == "set":
            values = list(await redis.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in await redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [json.dumps(entry) for entry in await redis.xrange(key)]
        else:
            raise AssertionError(f"{key} has a type this test does not read: {kind}")
        found += [(key, str(value)) for value in [key, *values]]
    return found


def start_roles(settings: Settings) -> InProcessRoles:
    roles = InProcessRoles(settings)
    roles.dispatcher(protection_app)
    roles.scheduler()
    roles.signal_bus()
    return roles


async def test_no_payload_is_readable_anywhere_in_redis_with_encryption_on(settings: Settings) -> None:
    protected = with_keys(settings, new_key())
    secret = f"s3cr3t-{token()}"
    roles = start_roles(protected)
    try:
        async with Client(settings=protected) as client:
            await client.create_schedule("nightly", protection_app.waits, {"secret": secret}, every="1h", paused=True)
            handle = await client.start(protection_app.everything, {"secret": secret}, workflow_id=f"run-{token()}")
            await eventually(lambda: status_is(client, handle.workflow_id, Status.AWAITING_EVENT), timeout=20)
            await client.send_event(handle.workflow_id, "go", {"secret": secret})
            await client.send_event(handle.workflow_id, "never-awaited", {"secret": secret})  # stays buffered
            output = await handle.result(timeout=20)
            failed = await client.start(protection_app.fails, {"secret": secret})
            live = await client.start(protection_app.waits, {"secret": secret})  # left waiting: live state too
            await eventually(lambda: status_is(client, failed.workflow_id, Status.FAILED), timeout=20)
            await eventually(lambda: status_is(client, live.workflow_id, Status.AWAITING_EVENT), timeout=20)

            # Everything was stored, and reads back whole with the key ...
            assert output["secret"] == secret
            assert output["retried"] == f"result {secret}"
            assert output["event"] == {"secret": secret}
            assert output["child"] == {"child saw": secret}
            assert secret in output["failure"]
            history = {entry.name: entry for entry in await client.history(handle.workflow_id)}
            assert history["protection_app.flaky"].args == {"args": [secret], "kwargs": {}}
            [signal] = [s async for s in client.signals(handle.workflow_id)]
            assert signal.payload == {"secret": secret}
            [dead] = await client.dlq_list()
            assert dead.args == {"args": [secret], "kwargs": {}}
            assert secret in (dead.error or {})["traceback"]
            state = await client.get_state(failed.workflow_id)
            assert state is not None
            assert secret in (state.error or {})["message"]
            assert (await client.get_schedule("nightly")).input == {"secret": secret}

            # ... and yet not one value of any key of the prefix shows any of it.
            stored = await everything_in_redis(client)
            assert len(stored) > 50
            leaks = [(key, value[:200]) for key, value in stored if secret in value or secret[7:] in value]
            assert leaks == []
            # what is left readable is the engine's own vocabulary: names, statuses, error types
            text = " ".join(value for _, value in stored)
            assert "protection_app.flaky" in text
            assert "NonRetryableError" in text
            assert "AWAITING_EVENT" in text
            assert text.count(MARKER[1:]) > 10
    finally:
        await roles.stop_all()


async def test_a_tampered_ciphertext_fails_the_read_clearly(settings: Settings) -> None:
    protected = with_keys(settings, new_key())
    roles = start_roles(protected)
    try:
        async with Client(settings=protected) as client:
            done = await client.start(protection_app.child, {"secret": "s"})
            assert await done.result(timeout=20) == {"child saw": "s"}
            wf = client.keys.for_workflow(done.workflow_id).wf(done.workflow_id)
            stored = await client.store.redis.hget(wf, "output")
            assert stored is not None
            assert stored.startswith(MARKER)
            flipped = "A" if stored[-6] != "A" else "B"
            await client.store.redis.hset(wf, "output", stored[:-6] + flipped + stored[-5:])
            with pytest.raises(PayloadIntegrityError, match="failed its integrity check"):
                await client.result(done.workflow_id, timeout=5)
            state = await client.get_state(done.workflow_id)  # a view: says so, never garbage
            assert state is not None
            assert state.output == UNREADABLE

        # The input of a run no dispatcher has touched yet: the dispatcher fails the run, naming the error.
        await roles.stop_all()
        async with Client(settings=protected) as client:
            run = await client.start(protection_app.child, {"secret": "s"})
            wf = client.keys.for_workflow(run.workflow_id).wf(run.workflow_id)
            stored = await client.store.redis.hget(wf, "input")
            assert stored is not None
            await client.store.redis.hset(wf, "input", stored[:-6] + ("A" if stored[-6] != "A" else "B") + stored[-5:])
            roles = start_roles(protected)
            await eventually(lambda: status_is(client, run.workflow_id, Status.FAILED), timeout=20)
            state = await client.get_state(run.workflow_id)
            assert state is not None
            assert state.error is not None
            assert state.error["type"] == "PayloadIntegrityError"
            assert "tampered with or corrupted" in state.error["message"]
    finally:
        await roles.stop_all()


async def test_key_rotation_finishes_old_runs_and_a_removed_key_fails_them_clearly(settings: Settings) -> None:
    old, new = new_key(), new_key()
    before, during, after = with_keys(settings, old), with_keys(settings, new, old), with_keys(settings, new)

    # Before the rotation: two runs start and wait, their payloads under the old key.
    roles = start_roles(before)
    async with Client(settings=before) as client:
        finishing = await client.start(protection_app.waits, {"n": 1})
        orphaned = await client.start(protection_app.waits, {"n": 2})
        for schedule_id in ("updated", "paused", "left"):  # schedules keep their input: step 3 needs a change
            await client.create_schedule(schedule_id, protection_app.waits, {"n": 3}, every="1h", paused=True)
        for run in (finishing, orphaned):
            await eventually(lambda run=run: status_is(client, run.workflow_id, Status.AWAITING_EVENT), timeout=20)
    await roles.stop_all()

    # Step 2 of the procedure: the new key first, the old one still listed. The old run finishes; what it
    # writes now is under the new key, and nothing it wrote before was re-encrypted.
    roles = start_roles(during)
    try:
        async with Client(settings=during) as client:
            await client.send_event(finishing.workflow_id, "go", {"after": "rotation"})
            expected = {"input": {"n": 1}, "event": {"after": "rotation"}}
            assert await client.result(finishing.workflow_id, timeout=20) == expected
            wf = client.keys.for_workflow(finishing.workflow_id).wf(finishing.workflow_id)
            fields = await client.store.redis.hgetall(wf)
            assert f":{key_id(old)}:" in fields["input"]
            assert f":{key_id(new)}:" in fields["output"]
            await client.update_schedule("updated", every="2h")  # no new input: it is re-encrypted all the same
            await client.unpause_schedule("paused")  # any change does
    finally:
        await roles.stop_all()

    # Step 3 too early: the old key is removed while a run still needs it. It fails, saying which key.
    roles = start_roles(after)
    try:
        async with Client(settings=after) as client:
            await client.send_event(orphaned.workflow_id, "go", {"after": "removal"})
            await eventually(lambda: status_is(client, orphaned.workflow_id, Status.FAILED), timeout=20)
            state = await client.get_state(orphaned.workflow_id)
            assert state is not None
            assert state.error is not None
            assert state.error["type"] == "EncryptionKeyMissingError"
            assert f"key {key_id(old)}, which is not among BDURABLE_ENCRYPTION_KEYS" in state.error["message"]
            assert state.input == ENCRYPTED  # a view without the key
            with pytest.raises(WorkflowFailedError) as failure:  # its error was written under the new key
                await client.result(orphaned.workflow_id, timeout=5)
            assert failure.value.error_type == "EncryptionKeyMissingError"
            # the finished run stays readable: its output is under the new key, its input shows as encrypted
            assert await client.result(finishing.workflow_id, timeout=5) == expected
            assert (await client.get_schedule("updated")).input == {"n": 3}
            assert (await client.get_schedule("paused")).input == {"n": 3}
            assert (await client.get_schedule("left")).input == ENCRYPTED
    finally:
        await roles.stop_all()


def bdurable(settings: Settings, *args: str, keys: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BDURABLE_")}
    env.update(BDURABLE_REDIS_URL=settings.redis_url, BDURABLE_PREFIX=settings.prefix,
               BDURABLE_SHARDS=str(settings.shards), PYTHONPATH=str(APPS))  # fmt: skip
    if keys:
        env["BDURABLE_ENCRYPTION_KEYS"] = ",".join(keys)
    return subprocess.run([sys.executable, "-m", "bdurable.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


async def test_the_cli_and_export_decode_with_the_keys_and_say_encrypted_without_them(
    settings: Settings, tmp_path: Path
) -> None:
    key = new_key()
    protected = with_keys(settings, key)
    roles = start_roles(protected)
    try:
        async with Client(settings=protected) as client:
            run = await client.start(protection_app.child, {"secret": "visible with the key"})
            await run.result(timeout=20)
        wid = run.workflow_id

        state = await asyncio.to_thread(bdurable, settings, "state", wid, "--json")
        assert state.returncode == 0
        assert json.loads(state.stdout)["input"] == ENCRYPTED
        result = await asyncio.to_thread(bdurable, settings, "result", wid)
        assert result.returncode == 0
        assert json.loads(result.stdout) == ENCRYPTED
        assert "not among BDURABLE_ENCRYPTION_KEYS" in result.stderr
        history = await asyncio.to_thread(bdurable, settings, "history", wid, "--json")
        assert history.returncode == 0
        exported = await asyncio.to_thread(bdurable, settings, "export", wid)
        assert exported.returncode == 0
        assert json.loads(exported.stdout)["input"] == ENCRYPTED
        assert "cannot be replayed" in exported.stderr

        (tmp_path / "sealed.json").write_text(exported.stdout)
        replayed = await asyncio.to_thread(bdurable, settings, "replay", "--app", "protection_app",
                                           str(tmp_path / "sealed.json"))  # fmt: skip
        assert replayed.returncode == 2, replayed  # cannot be replayed: not a divergence of the code (exit 1)
        assert "\"input\" is '<encrypted>'" in replayed.stderr

        keyed = await asyncio.to_thread(bdurable, settings, "export", wid, keys=(key,))
        assert json.loads(keyed.stdout)["input"] == {"secret": "visible with the key"}
        assert json.loads(keyed.stdout)["output"] == {"child saw": "visible with the key"}
        (tmp_path / "open.json").write_text(keyed.stdout)
        replayed = await asyncio.to_thread(bdurable, settings, "replay", "--app", "protection_app",
                                           str(tmp_path / "open.json"))  # fmt: skip
        assert replayed.returncode == 0, replayed
        result = await asyncio.to_thread(bdurable, settings, "result", wid, keys=(key,))
        assert json.loads(result.stdout) == {"child saw": "visible with the key"}

        doctor = await asyncio.to_thread(bdurable, settings, "doctor", "--json", keys=(key,))
        report = json.loads(doctor.stdout)
        assert report["payloads_encrypted"] is True
        assert key_id(key) in report["payloads"]
        # An upper bound: base64 of the encrypted JSON, uncompressed (a payload zstd cannot shrink is stored so).
        assert report["largest_stored_payload"] >= settings.max_payload * 4 // 3
        plain = json.loads((await asyncio.to_thread(bdurable, settings, "doctor", "--json")).stdout)
        assert plain["payloads_encrypted"] is False
        assert any("stored in clear" in warning for warning in plain["warnings"])
    finally:
        await roles.stop_all()


async def test_large_payloads_are_compressed_and_a_custom_codec_is_applied(settings: Settings) -> None:
    compressing = dataclasses.replace(settings, compress_above=1024)
    coded = dataclasses.replace(settings, codec="protection_app:Reverse")
    for configured, marker in ((compressing, '"$bdurable:1:z::'), (coded, '"$bdurable:1:zc::')):
        roles = start_roles(configured)
        try:
            async with Client(settings=configured) as client:
                big = {"text": "repetitive " * 500}
                run = await client.start(protection_app.child, {"secret": big})
                assert await run.result(timeout=20) == {"child saw": big}
                wf = client.keys.for_workflow(run.workflow_id).wf(run.workflow_id)
                stored = await client.store.redis.hget(wf, "input")
                assert stored is not None
                assert stored.startswith(marker)
                if configured is compressing:
                    assert len(stored) < len(json.dumps(big)) / 5
                    small = await client.start(protection_app.child, {"secret": "small"})
                    await small.result(timeout=20)
                    raw = await client.store.redis.hget(client.keys.for_workflow(small.workflow_id).wf(
                        small.workflow_id), "input")  # fmt: skip
                    assert raw == '{"secret":"small"}'  # under the threshold: plain JSON, as before
        finally:
            await roles.stop_all()


async def test_a_custom_codec_whose_service_is_down_delays_the_run_and_never_fails_it(settings: Settings) -> None:
    """A codec that raises ConnectionError (its KMS did not answer) says nothing about the payload: the step
    waits and tries again, and the run finishes once the service is back (it failed for good, as tampered);
    views say the codec did not answer, and a schedule can be paused while its encode does not work either."""
    outage = protection_app.Outage
    coded = dataclasses.replace(settings, codec="protection_app:Outage")
    roles = start_roles(coded)
    try:
        async with Client(settings=coded) as client:
            await client.create_schedule("during-outage", protection_app.waits, {"n": 2}, every="1h")
            run = await client.start(protection_app.waits, {"n": 1})
            await eventually(lambda: status_is(client, run.workflow_id, Status.AWAITING_EVENT), timeout=20)
            outage.down, outage.refused = True, 0
            await client.send_event(run.workflow_id, "go", {"during": "outage"})
            await asyncio.sleep(1.5)  # the step tries to open the event again and again meanwhile
            assert outage.refused >= 3
            state = await client.get_state(run.workflow_id)
            assert state is not None
            assert state.status == Status.RUNNING, state.error
            assert state.input == UNAVAILABLE  # not "failed its integrity check": nothing is wrong with it
            outage.encode_down = True
            await client.pause_schedule("during-outage")  # its input is kept as it was
            outage.down = outage.encode_down = False
            assert await run.result(timeout=20) == {"input": {"n": 1}, "event": {"during": "outage"}}
            schedule = await client.get_schedule("during-outage")
            assert schedule.paused
            assert schedule.input == {"n": 2}
    finally:
        outage.down = outage.encode_down = False
        await roles.stop_all()
