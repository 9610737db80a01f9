"""Settings from the environment and back: a process hands its settings to another as ``BDURABLE_*``."""

from __future__ import annotations

import base64

import pytest

from bdurable import Settings
from bdurable.config import redact_url


def test_settings_survive_the_trip_through_the_environment() -> None:
    key, old_key = (base64.b64encode(bytes(range(n, n + 32))).decode() for n in (0, 100))
    original = Settings(
        redis_url="rediss://user:pw@host:6380/1", prefix="p-1", retention=3600.5, heartbeat_interval=0.2,
        heartbeat_timeout=1.0, max_payload=65536, metrics_port=9100, shards=6, drain_timeout=60.0,
        run_cache_bytes=1 << 20, encryption_keys=(key, old_key), compress_above=None, console_token="t",
    )  # fmt: skip
    assert Settings.from_env(original.to_env()) == original
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_bad_values_name_their_variable() -> None:
    with pytest.raises(ValueError, match="BDURABLE_DRAIN_TIMEOUT"):
        Settings.from_env({"BDURABLE_DRAIN_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="BDURABLE_RUN_CACHE_BYTES"):
        Settings.from_env({"BDURABLE_RUN_CACHE_BYTES": "lots"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [(",", "lists no key"), (" , ,", "lists no key"), (",K", "key #1 is empty"), ("K,,K", "key #2 is empty")],
)
def test_an_empty_entry_of_the_key_list_is_refused(raw: str, message: str) -> None:
    """A secret rendered as "," must not turn encryption off, nor "K,,K2" shift the positions errors name."""
    key = base64.b64encode(bytes(range(32))).decode()
    with pytest.raises(ValueError, match=f"BDURABLE_ENCRYPTION_KEYS: {message}"):
        Settings.from_env({"BDURABLE_ENCRYPTION_KEYS": raw.replace("K", key)})
    assert Settings.from_env({"BDURABLE_ENCRYPTION_KEYS": " "}).encryption_keys == ()  # blank: no encryption


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:s3cret@host/0", "redis://:***@host/0"),
        ("redis://host:6379/0?password=s3cret", "redis://host:6379/0?password=***"),
        ("redis://host:6379/0?password=p@s3cret", "redis://host:6379/0?password=***"),  # an @ in the query
        ("redis://u:s3cret@host/0?db=1&password=a@s3cret", "redis://u:***@host/0?db=1&password=***"),
        (
            "rediss://host/0?ssl_password=s3cret&ssl_cert_reqs=none",
            "rediss://host/0?ssl_password=***&ssl_cert_reqs=none",
        ),
        ("unix:///run/redis.sock?password=s3cret&db=2", "unix:///run/redis.sock?password=***&db=2"),
        ("redis://user@host:6379", "redis://user@host:6379"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_a_url_is_shown_without_its_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)
