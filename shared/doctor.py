"""``bdurable doctor``: is this Redis fit to hold workflow state, and how much could a crash lose?

Workflow state lives only in Redis, so two settings decide whether it is safe: persistence (AOF and/or
RDB snapshots, and how often the AOF is fsynced) and the eviction policy (anything but ``noeviction``
lets Redis delete keys, i.e. queued work and workflows, under memory pressure). The report reads
``INFO`` and ``CONFIG GET``; managed services often refuse ``CONFIG``, and then the report says what it
could not check and falls back to what ``INFO`` shows. ``evaluate`` is pure (tested with made-up
servers); ``diagnose`` only fetches.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import ResponseError

from bdurable.codec import dumps
from bdurable.config import Settings
from bdurable.payloads import PREFIX, PayloadCodec

__all__ = [
    "CONFIG_PARAMETERS",
    "MIN_VERSION",
    "MIN_VERSION_WHY",
    "DoctorReport",
    "diagnose",
    "evaluate",
    "merge",
    "with_payload_protection",
]

CONFIG_PARAMETERS = ("appendonly", "appendfsync", "save", "maxmemory-policy")
# The oldest Redis supported, as INFO's ``redis_version`` (Valkey reports a Redis version too: 7.2.4 from
# Valkey 7.2 on, its own in ``valkey_version``). The commands the engine sends need 6.2 (LMOVE and RPOP with
# a count, in its scripts); 7.0 is the floor because it is the oldest release tested (CI runs Debian
# bookworm's 7.0.15) and the first on which the documented ACL users keep ACL LOG clean: 6.2 checks the
# CLIENT SETINFO that redis-py sends on every connection against the user's ACL and logs a refusal, where
# 7.0 rejects it as an unknown subcommand first. 6.2 is end of life.
MIN_VERSION = (7, 0)
MIN_VERSION_WHY = (
    "b-durable supports Redis 7.0 or newer, or Valkey 7.2 or newer: 7.0 is the oldest release it is tested on "
    "and the first on which its documented ACL users leave ACL LOG clean"
)


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """What the doctor found. ``persisted``/``evictable`` are ``None`` when they could not be checked."""

    redis_url: str
    server_version: str | None
    mode: str | None
    role: str | None
    connected_replicas: int | None
    aof_enabled: bool | None
    appendfsync: str | None
    save: str | None
    last_snapshot: datetime | None
    maxmemory: int | None
    maxmemory_policy: str | None
    persisted: bool | None
    evictable: bool | None
    loss_window: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # the primaries judged, on a cluster
    # How this process's settings store payloads (BDURABLE_ENCRYPTION_KEYS, _COMPRESS_ABOVE, _CODEC), and the
    # most a payload at BDURABLE_MAX_PAYLOAD takes in Redis once stored (envelope, base64, tag included).
    payloads: str = ""
    payloads_encrypted: bool | None = None
    largest_stored_payload: int | None = None

    @property
    def ok(self) -> bool:
        """True when workflow state survives a Redis restart and cannot be evicted."""
        return self.persisted is True and self.evictable is False and not self.problems

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_snapshot"] = self.last_snapshot.isoformat() if self.last_snapshot else None
        data["ok"] = self.ok
        return data


async def diagnose(redis: Any, *, redis_url: str, wait_replicas: int = 0) -> DoctorReport:
    """Read INFO and CONFIG from a connected ``redis.asyncio`` client (decoded responses) and evaluate.

    On a cluster every primary is read and judged: state is only as safe as its weakest shard. Connection
    errors propagate (the CLI exits 4); refusals of INFO or CONFIG are reported as unchecked.
    """
    await redis.ping()
    primaries = list(redis.get_primaries()) if hasattr(redis, "get_primaries") else []
    if not primaries:
        info, config, refused = await _read(redis, {})
        return evaluate(info, config, redis_url=redis_url, wait_replicas=wait_replicas, refused=refused)
    reports = []
    for node in primaries:
        info, config, refused = await _read(redis, {"target_nodes": node})
        reports.append(evaluate(info, config, redis_url=node.name, wait_replicas=wait_replicas, refused=refused))
    return merge(reports, redis_url=redis_url)


async def _read(redis: Any, target: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    info: dict[str, Any] = {}
    refused: dict[str, str] = {}
    try:
        info = dict(await redis.info(**target))
    except ResponseError as exc:
        refused["INFO"] = str(exc)
    config: dict[str, str] = {}
    for parameter in CONFIG_PARAMETERS:
        try:
            config.update(await redis.config_get(parameter, **target))
        except ResponseError as exc:
            refused.setdefault("CONFIG GET", str(exc))
    return info, config, refused


def with_payload_protection(report: DoctorReport, settings: Settings) -> DoctorReport:
    """The report with how payloads are stored: protected or not (a warning when not encrypted, which does not
    change the exit code: plaintext payloads are a choice, not a loss of state), and the stored size of the
    largest payload allowed: an upper bound, the size of the worst case sealed. The codec keeps a compressed
    form only where it is smaller, so the worst case is a payload stored uncompressed, in an envelope (as
    every payload is when encrypted or custom-encoded, and one that looks like an envelope always is); a
    random sample instead, which zstd still shrinks, understated the bound."""
    codec = PayloadCodec.from_settings(settings)
    never_compressing = PayloadCodec(
        keyring=codec.keyring, compress_above=None, custom=codec.custom, custom_name=codec.custom_name
    )
    largest = never_compressing.seal(dumps(_worst_case(settings.max_payload - 2)))
    warnings = list(report.warnings)
    if codec.keyring is None:
        warnings.append(
            "payloads (inputs, outputs, arguments, results, events, signals, errors) are stored in clear: anyone "
            "who reads Redis, its RDB/AOF files or their backups reads them; set BDURABLE_ENCRYPTION_KEYS"
        )
    return replace(
        report, payloads=codec.describe(), payloads_encrypted=codec.keyring is not None,
        largest_stored_payload=len(largest.encode()), warnings=warnings,
    )  # fmt: skip


def _worst_case(size: int) -> str:
    """A string of ``size`` characters whose JSON text is sealed in an envelope whatever the settings (it
    begins like one), filled with random base64 text (a custom codec sees data it cannot shrink much)."""
    filler = base64.b64encode(os.urandom(size)).decode("ascii")
    return (PREFIX + filler)[: max(size, 0)]


def merge(reports: list[DoctorReport], *, redis_url: str) -> DoctorReport:
    """One verdict for several nodes (a cluster's primaries): the weakest node decides."""
    if len(reports) == 1:
        return replace(reports[0], redis_url=redis_url)

    def each(items: list[str], report: DoctorReport) -> list[str]:
        return [f"{report.redis_url}: {item}" for item in items]

    def same(values: list[Any]) -> Any:
        distinct = list(dict.fromkeys(values))
        return distinct[0] if len(distinct) == 1 else None

    persisted = [r.persisted for r in reports]
    evictable = [r.evictable for r in reports]
    windows = list(dict.fromkeys(r.loss_window for r in reports))
    replicas = [r.connected_replicas for r in reports]
    snapshots = [r.last_snapshot for r in reports if r.last_snapshot is not None]
    return DoctorReport(
        redis_url=redis_url,
        server_version=", ".join(dict.fromkeys(r.server_version or "?" for r in reports)),
        mode=f"cluster ({len(reports)} primaries)",
        role=same([r.role for r in reports]),
        connected_replicas=None if None in replicas else sum(r or 0 for r in replicas),
        aof_enabled=same([r.aof_enabled for r in reports]),
        appendfsync=same([r.appendfsync for r in reports]),
        save=same([r.save for r in reports]),
        last_snapshot=min(snapshots) if snapshots else None,
        maxmemory=same([r.maxmemory for r in reports]),
        maxmemory_policy=same([r.maxmemory_policy for r in reports]),
        persisted=False if False in persisted else (True if all(persisted) else None),
        evictable=True
        if True in evictable
        else (False if evictable and not any(evictable) and None not in evictable else None),
        loss_window=windows[0] if len(windows) == 1 else "; ".join(f"{r.redis_url}: {r.loss_window}" for r in reports),
        problems=[item for r in reports for item in each(r.problems, r)],
        warnings=[item for r in reports for item in each(r.warnings, r)],
        unchecked=[item for r in reports for item in each(r.unchecked, r)],
        nodes=[r.redis_url for r in reports],
    )


def evaluate(
    info: Mapping[str, Any],
    config: Mapping[str, str],
    *,
    redis_url: str,
    wait_replicas: int = 0,
    refused: Mapping[str, str] | None = None,
) -> DoctorReport:
    """The verdict for a server, from its INFO fields and CONFIG values (either may be partial)."""
    refused = refused or {}
    problems: list[str] = []
    warnings: list[str] = []
    unchecked = [f"{command} was refused ({reason})" for command, reason in refused.items()]

    aof = _yes(config.get("appendonly"))
    if aof is None and "aof_enabled" in info:
        aof = int(info["aof_enabled"]) == 1
    fsync = config.get("appendfsync")
    save = config.get("save")
    rdb = None if save is None else bool(save.strip())
    policy = config.get("maxmemory-policy") or _text(info.get("maxmemory_policy"))
    for name, value in (
        ("appendonly", aof),
        ("appendfsync", fsync),
        ("save", save),
        ("maxmemory-policy", policy),
    ):
        if value is None and not (name == "appendfsync" and aof is False):
            unchecked.append(f"{name} could not be read")

    persisted = True if (aof or rdb) else (False if aof is False and rdb is False else None)
    evictable = None if policy is None else policy != "noeviction"
    version = _text(info.get("redis_version"))
    valkey = _text(info.get("valkey_version"))
    role = _text(info.get("role"))
    replicas = _int(info.get("connected_slaves"))
    last_save = _int(info.get("rdb_last_save_time"))
    snapshot = datetime.fromtimestamp(last_save, UTC) if last_save and rdb else None

    if persisted is None:
        problems.append("could not confirm that Redis persists its data (AOF or RDB)")
    elif not persisted:
        problems.append("Redis persists nothing: every workflow is lost when it restarts (turn on appendonly)")
    if evictable:
        problems.append(
            f"maxmemory-policy is {policy}: Redis may evict workflow state under memory pressure "
            "(set maxmemory-policy noeviction)"
        )
    if version is not None and _version(version) < MIN_VERSION:
        problems.append(f"Redis {version} is too old: {MIN_VERSION_WHY}")
    if role == "slave":
        problems.append("this server is a replica: point BDURABLE_REDIS_URL at the primary")
    if aof and _text(info.get("aof_last_write_status")) not in (None, "ok"):
        problems.append("the last AOF write failed: Redis may be refusing writes (check its disk)")
    if rdb and _text(info.get("rdb_last_bgsave_status")) not in (None, "ok"):
        problems.append("the last RDB snapshot failed (check Redis's disk and logs)")
    if aof and fsync == "no":
        warnings.append("appendfsync no leaves flushing to the OS: prefer everysec (or always)")
    if _int(info.get("maxmemory")) == 0 and policy == "noeviction":
        warnings.append("no maxmemory is set: Redis can grow until the OS kills it (set maxmemory)")
    if replicas:
        warnings.append(
            f"a failover to one of the {replicas} replica(s) can drop writes not yet replicated; "
            "BDURABLE_WAIT_REPLICAS narrows that window"
        )
    if wait_replicas and (replicas or 0) < wait_replicas:
        warnings.append(
            f"BDURABLE_WAIT_REPLICAS={wait_replicas} but {replicas or 0} replica(s) are connected: "
            "every commit will wait for replicas that are not there"
        )

    return DoctorReport(
        redis_url=redis_url,
        server_version=f"{version} (Valkey {valkey})" if version and valkey else version,
        mode=_mode(info),
        role=role,
        connected_replicas=replicas,
        aof_enabled=aof,
        appendfsync=fsync,
        save=save,
        last_snapshot=snapshot,
        maxmemory=_int(info.get("maxmemory")),
        maxmemory_policy=policy,
        persisted=persisted,
        evictable=evictable,
        loss_window=_loss_window(aof, fsync, rdb, save, snapshot),
        problems=problems,
        warnings=warnings,
        unchecked=unchecked,
    )


def _loss_window(aof: bool | None, fsync: str | None, rdb: bool | None, save: str | None, at: datetime | None) -> str:
    """In words: which acknowledged writes a crash or restart can lose with this setup."""
    if aof:
        if fsync == "always":
            return "none: every write is on disk before Redis acknowledges it"
        if fsync == "everysec":
            return "about 1 s of acknowledged writes on a host crash or power loss (none if only Redis dies)"
        if fsync == "no":
            return "up to about 30 s of acknowledged writes on a host crash (none if only Redis dies)"
        return (
            "on a host crash: none with appendfsync always, about 1 s with everysec, up to about 30 s "
            "with no (appendfsync could not be read)"
        )
    if rdb:
        since = f" (last at {at.isoformat(timespec='seconds')})" if at else ""
        return f"everything written since the last RDB snapshot{since}, on any crash; snapshots: save {save}"
    if aof is False and rdb is False:
        return "everything, on any restart: nothing is persisted"
    return "unknown: persistence could not be checked"


def _mode(info: Mapping[str, Any]) -> str | None:
    if _int(info.get("cluster_enabled")):
        return "cluster"
    # Redis says `redis_mode`; Valkey 8+ says `server_mode`. A server that answers commands and is no cluster
    # node is standalone (a sentinel would not run them).
    return _text(info.get("redis_mode")) or _text(info.get("server_mode")) or "standalone"


def _yes(value: str | None) -> bool | None:
    return None if value is None else value.strip().lower() == "yes"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)
