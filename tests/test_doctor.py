"""``bdurable doctor``: the verdict for made-up servers (pure), then for real ones through the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from support import LocalCluster
from typer.testing import CliRunner, Result

from bdurable.cli import app
from bdurable.doctor import MIN_VERSION_WHY, evaluate
from bdurable.embedded import RedisServer, free_port

SAFE_INFO: dict[str, Any] = {
    "redis_version": "7.2.4",
    "redis_mode": "standalone",
    "role": "master",
    "connected_slaves": 0,
    "aof_enabled": 1,
    "maxmemory_policy": "noeviction",
    "maxmemory": 1 << 30,
    "rdb_last_save_time": 1_700_000_000,
    "aof_last_write_status": "ok",
    "rdb_last_bgsave_status": "ok",
    "cluster_enabled": 0,
}
SAFE_CONFIG = {"appendonly": "yes", "appendfsync": "everysec", "save": "", "maxmemory-policy": "noeviction"}


def verdict(info: dict[str, Any] | None = None, config: dict[str, str] | None = None, **kw: Any) -> Any:
    return evaluate({**SAFE_INFO, **(info or {})}, {**SAFE_CONFIG, **(config or {})}, redis_url="redis://x", **kw)


def test_aof_everysec_with_noeviction_is_ok_and_loses_about_a_second() -> None:
    report = verdict()
    assert report.ok
    assert report.exit_code == 0
    assert report.loss_window.startswith("about 1 s of acknowledged writes on a host crash")
    assert report.problems == []
    assert report.unchecked == []


@pytest.mark.parametrize(
    ("config", "window"),
    [
        ({"appendfsync": "always"}, "none: every write is on disk"),
        ({"appendfsync": "no"}, "up to about 30 s"),
        ({"appendonly": "no", "save": "3600 1 300 100"}, "everything written since the last RDB snapshot"),
    ],
)
def test_other_persistence_setups_are_ok_with_their_window(config: dict[str, str], window: str) -> None:
    report = verdict(info={"aof_enabled": 0 if config.get("appendonly") == "no" else 1}, config=config)
    assert report.ok
    assert window in report.loss_window


def test_no_persistence_is_not_ok() -> None:
    report = verdict(info={"aof_enabled": 0}, config={"appendonly": "no", "save": ""})
    assert not report.ok
    assert report.exit_code == 1
    assert report.persisted is False
    assert report.loss_window == "everything, on any restart: nothing is persisted"


def test_an_evicting_policy_is_not_ok() -> None:
    report = verdict(config={"maxmemory-policy": "allkeys-lru"})
    assert report.exit_code == 1
    assert report.evictable is True
    assert any("set maxmemory-policy noeviction" in p for p in report.problems)


def test_without_config_it_says_what_it_could_not_check_and_uses_info() -> None:
    refused = {"CONFIG GET": "unknown command 'CONFIG'"}
    report = evaluate(SAFE_INFO, {}, redis_url="redis://x", refused=refused)
    assert report.ok  # AOF on and noeviction, both read from INFO
    assert report.aof_enabled is True
    assert report.maxmemory_policy == "noeviction"
    assert any("appendfsync could not be read" in u for u in report.unchecked)
    assert any("CONFIG GET was refused" in u for u in report.unchecked)
    assert "could not be read" in report.loss_window
    unknown = evaluate({**SAFE_INFO, "aof_enabled": 0}, {}, redis_url="redis://x", refused=refused)
    assert unknown.persisted is None
    assert unknown.exit_code == 1


def test_replicas_versions_and_failed_writes() -> None:
    assert not verdict(info={"redis_version": "6.0.9"}).ok
    too_old = verdict(info={"redis_version": "6.2.14"})
    assert not too_old.ok
    assert too_old.problems == [f"Redis 6.2.14 is too old: {MIN_VERSION_WHY}"]
    assert "BLMOVE" not in MIN_VERSION_WHY  # the engine never sends it
    assert verdict(info={"redis_version": "7.0.15"}).ok  # the oldest CI runs
    valkey = verdict(info={"redis_version": "7.2.4", "valkey_version": "9.1.2", "server_name": "valkey"})
    assert valkey.ok
    assert valkey.server_version == "7.2.4 (Valkey 9.1.2)"
    assert not verdict(info={"role": "slave"}).ok
    assert not verdict(info={"aof_last_write_status": "err"}).ok
    replicated = verdict(info={"connected_slaves": 1}, wait_replicas=2)
    assert replicated.ok
    assert len(replicated.warnings) == 2


def doctor(url: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["doctor", "--redis-url", url, *args])


def test_cli_on_the_test_server_is_ok(redis_server: RedisServer) -> None:
    result = doctor(redis_server.url)
    assert result.exit_code == 0, result.stdout
    assert "about 1 s of acknowledged writes" in result.stdout
    document = json.loads(doctor(redis_server.url, "--json").stdout)
    assert document["ok"] is True
    version = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        info = version.info("server")
    finally:
        version.close()
    assert document["server_version"].startswith(info["redis_version"])
    if "valkey_version" in info:  # the pip-installed valkey-server: its own version is named too
        assert document["server_version"] == f"{info['redis_version']} (Valkey {info['valkey_version']})"
    assert document["aof_enabled"] is True
    assert document["maxmemory_policy"] == "noeviction"
    assert document["appendfsync"] == "everysec"
    assert document["mode"] == "standalone"  # Valkey names it server_mode: it read as unknown ("?")


def test_cli_flags_a_server_that_persists_nothing() -> None:
    with RedisServer(appendonly=False) as server:
        result = doctor(server.url)
    assert result.exit_code == 1
    assert "nothing is persisted" in result.stdout


def test_cli_flags_a_server_that_evicts() -> None:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        try:
            client.config_set("maxmemory-policy", "volatile-lru")
        finally:
            client.close()
        result = doctor(server.url, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["evictable"] is True


def test_cli_without_config_reports_what_it_could_not_check() -> None:
    with RedisServer(extra=["--rename-command", "CONFIG", ""]) as server:
        result = doctor(server.url)
    assert result.exit_code == 0
    assert "not checked" in result.stdout
    assert "appendfsync" in result.stdout


def test_cli_unreachable_exits_4() -> None:
    result = doctor(f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == 4
    assert result.stderr.startswith("error: cannot reach Redis")
    assert "Traceback" not in result.stderr


def test_cli_judges_every_primary_of_a_cluster() -> None:
    cluster = LocalCluster().start()
    try:
        ok = doctor(cluster.url, "--json")
        client = redis.Redis(port=cluster.nodes[1].port)
        try:
            client.config_set("maxmemory-policy", "allkeys-lru")
        finally:
            client.close()
        one_bad = doctor(cluster.url, "--json")
    finally:
        for node in cluster.nodes:
            node.stop()
    assert ok.exit_code == 0, ok.stdout
    document = json.loads(ok.stdout)
    assert len(document["nodes"]) == 3
    assert document["mode"] == "cluster (3 primaries)"
    assert one_bad.exit_code == 1
    problems = json.loads(one_bad.stdout)["problems"]
    assert problems == [f"127.0.0.1:{cluster.nodes[1].port}: " + problems[0].split(": ", 1)[1]]
    assert "allkeys-lru" in problems[0]
