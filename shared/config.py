"""Settings, built once from the environment and command-line options, then passed explicitly."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from dataclasses import field as dataclass_field
from typing import Any

from bdurable.durations import parse_duration, parse_size
from bdurable.keyring import check_keys

__all__ = ["DEFAULT_REDIS_URL", "Settings", "redact_url"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
EVENT_LOOPS = ("asyncio", "uvloop")


# What a Redis URL may start with: redis-py's own schemes, and the cluster ones (bdurable.store.CLUSTER_SCHEMES).
REDIS_URL_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_DATABASE_PATH = re.compile(r"/?|/[0-9]+/?")  # what follows host:port in a TCP URL: nothing, or a database number


def _url_path(url: str) -> str:
    """The path of a Redis URL: what follows its host and port, up to a query."""
    rest = url.partition("://")[2].partition("?")[0].partition("#")[0]
    return "/" + rest.partition("/")[2] if "/" in rest else ""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of b-durable, with the defaults of the public contract.

    Durations are seconds (floats), sizes are bytes. Each field maps to ``BDURABLE_<FIELD>``.
    """

    redis_url: str = DEFAULT_REDIS_URL
    prefix: str = "bdurable"
    retention: float = 7 * 86400.0
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 10.0
    wait_replicas: int = 0
    max_payload: int = 1024 * 1024
    log_format: str | None = None
    log_level: str = "info"
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"  # all interfaces, for Prometheus in a pod; 127.0.0.1 keeps it local
    shards: int = 1
    # How long a dispatcher's drain may take on SIGTERM before what still runs is handed back (set the pod's
    # terminationGracePeriodSeconds above it), how long a role's loops may not respond before /livez fails,
    # and how many payload bytes a dispatcher keeps in memory for the runs it caches between steps.
    drain_timeout: float = 25.0
    liveness_timeout: float = 30.0
    run_cache_bytes: int = 256 * 1024 * 1024
    # Required for every action of the web console (docs/console.md); never shown in a repr or a log line.
    console_token: str | None = dataclass_field(default=None, repr=False)
    # Payload protection (docs/security.md): base64 AES-256 keys, the first encrypts and all decrypt; never shown
    # in a repr or a log line. Payloads over `compress_above` bytes are compressed (None: never); `codec` names a
    # custom codec, "module:object", applied to every payload.
    encryption_keys: tuple[str, ...] = dataclass_field(default=(), repr=False)
    compress_above: int | None = 4096
    codec: str | None = None
    # The event loop of the role processes: asyncio's own, or uvloop (the `uvloop` extra). uvloop is no default:
    # measured on and off (docs/performance.md), it gave no clear gain here (0.92-1.25x across runs).
    event_loop: str = "asyncio"

    def __post_init__(self) -> None:
        scheme = self.redis_url.partition("://")[0].lower() if "://" in self.redis_url else ""
        if scheme not in REDIS_URL_SCHEMES:  # the URL itself is not shown: it may hold a password
            raise ValueError(
                "the Redis URL (BDURABLE_REDIS_URL, --redis-url) must start with "
                + ", ".join(f"{s}://" for s in REDIS_URL_SCHEMES)
            )
        path, cluster = _url_path(self.redis_url), scheme.endswith("+cluster")
        if scheme != "unix" and not (_DATABASE_PATH.fullmatch(path) and (not cluster or path.strip("/") in ("", "0"))):
            raise ValueError(  # redis-py would drop a path it cannot read and use database 0
                "the Redis URL's path must be a database number (redis://host:6379/0), or nothing"
                + (" (a cluster has only database 0)" if cluster else "")
                + ("; a '/' in a user name or password is written %2F" if "@" in path else "")
            )
        if not self.prefix or any(c in self.prefix for c in "{}: \n"):
            raise ValueError(
                f"invalid prefix {self.prefix!r}: it must not be empty nor hold '{{', '}}', ':', spaces or newlines"
            )
        if self.heartbeat_interval <= 0 or self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("heartbeat_timeout must be greater than heartbeat_interval, both positive")
        if self.wait_replicas < 0:
            raise ValueError("wait_replicas must be >= 0")
        if self.wait_replicas and self.redis_url.partition("://")[0].endswith("+cluster"):
            raise ValueError("BDURABLE_WAIT_REPLICAS is not supported on Redis Cluster (WAIT is per node)")
        if not 1 <= self.shards <= 1024:
            raise ValueError("shards must be between 1 and 1024")
        if self.drain_timeout < 0 or self.liveness_timeout <= 0 or self.run_cache_bytes < 0:
            raise ValueError("drain_timeout and run_cache_bytes must be >= 0, liveness_timeout > 0")
        if self.log_format not in (None, "console", "json"):
            raise ValueError(f"invalid log format {self.log_format!r}: use 'console' or 'json'")
        if self.compress_above is not None and self.compress_above < 0:
            raise ValueError("compress_above must be >= 0 (or None: never compress)")
        if self.codec is not None and ":" not in self.codec:
            raise ValueError(f"BDURABLE_CODEC must be 'module:object', not {self.codec!r}")
        if self.event_loop not in EVENT_LOOPS:
            raise ValueError(f"invalid event loop {self.event_loop!r}: use {', '.join(map(repr, EVENT_LOOPS))}")
        check_keys(self.encryption_keys)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``BDURABLE_*`` variables, then apply non-``None`` overrides (from CLI options)."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = source.get(f"BDURABLE_{field.name.upper()}")
            if raw is not None and raw != "":
                values[field.name] = _convert(field.name, raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = _convert(name, value, source=_option(name)) if isinstance(value, str) else value
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The ``BDURABLE_*`` variables that give these settings to another process (the inverse of
        ``from_env``: secrets included, so hand them only to processes of your own)."""
        env: dict[str, str] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "compress_above" and value is None:
                env["BDURABLE_COMPRESS_ABOVE"] = "off"
            elif isinstance(value, tuple):
                if value:
                    env[f"BDURABLE_{field.name.upper()}"] = ",".join(value)
            elif value is not None:
                env[f"BDURABLE_{field.name.upper()}"] = str(value)
        return env

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-``None`` fields replaced (strings parsed like the environment)."""
        clean = {
            k: (_convert(k, v, source=_option(k)) if isinstance(v, str) else v)
            for k, v in overrides.items()
            if v is not None
        }
        return replace(self, **clean)


def _option(name: str) -> str:
    """How an override is named in errors: the CLI option that gives it (``--retention``)."""
    return "--" + name.replace("_", "-")


def _convert(name: str, raw: str, *, source: str | None = None) -> Any:
    """A setting from its text (a variable's, or an option's: ``source`` names the option in errors)."""
    try:
        if name in ("retention", "heartbeat_interval", "heartbeat_timeout", "drain_timeout", "liveness_timeout"):
            return parse_duration(raw)
        if name in ("max_payload", "run_cache_bytes"):
            return parse_size(raw)
        if name in ("wait_replicas", "metrics_port", "shards"):
            return int(raw)
        if name in ("log_format", "log_level", "event_loop"):
            return raw.lower()
        if name == "encryption_keys":
            return _key_list(raw)
        if name == "compress_above":
            return None if raw.strip().lower() in ("off", "never", "none") else parse_size(raw)
    except ValueError as exc:
        raise ValueError(f"{source or 'BDURABLE_' + name.upper()}: {exc}") from None
    return raw


def redact_url(url: str) -> str:
    """The URL without its passwords, fit for an error message or a report: the one in ``user:password@``, and
    any query parameter that holds one (redis-py reads ``?password=`` and ``?ssl_password=`` too)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))  # as urlsplit reads it
    authority, tail = rest[:end], rest[end:]
    credentials, at, host = authority.rpartition("@")
    if at and ":" in credentials:
        authority = credentials.split(":", 1)[0] + ":***@" + host
    where, question, query = tail.partition("?")
    if question:
        where += "?" + "&".join(_redact_param(param) for param in query.split("&"))
    return f"{scheme}://{authority}{where}"


def _redact_param(param: str) -> str:
    name, equals, _ = param.partition("=")
    return f"{name}=***" if equals and "password" in name.lower() else param


def _key_list(raw: str) -> tuple[str, ...]:
    """The keys of ``BDURABLE_ENCRYPTION_KEYS``: blank text means none, and a trailing comma is harmless; a list
    of commas is refused (a secret whose template rendered ``","`` must not turn encryption off), and so is an
    empty entry before a key (``K1,,K2`` would shift the positions that error messages name)."""
    parts = [part.strip() for part in raw.split(",")]
    while parts and not parts[-1]:
        parts.pop()
    if not parts and raw.strip():
        raise ValueError("lists no key, only commas (leave it unset or empty to store payloads in clear)")
    if "" in parts:
        raise ValueError(f"key #{parts.index('') + 1} is empty (keys are separated by commas)")
    return tuple(parts)
