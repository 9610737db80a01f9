"""The Redis key schema: every key and channel name b-durable uses, in one place.

This table is the only spelling of the schema. The Python builders below read it, and the Lua helpers every
script uses (``k_wf(id)``, ``K_TIMERS``, ``ch_workflow(id)``, ...) are generated from it when the scripts are
loaded (:func:`lua_prelude`), so the two languages cannot drift apart.

Keys of one shard share the hash tag ``{<prefix>:<shard>}`` (``T`` below): everything one atomic script touches
lies in one Redis Cluster slot. The few fleet-wide keys use the tag ``{<prefix>}`` (``G``). Every key and
channel starts with its prefix's tag, so two prefixes on one Redis never see each other.

Every name is ``<tag>:<kind>:<part>:...:<last part>``. The kind is a fixed word per entry of the table, every
part but the last is escaped (``%`` -> ``%25``, ``:`` -> ``%3A``), and the last part is taken as it is. So a
name splits back into (tag, kind, parts) in exactly one way, and two different (kind, parts) can never give the
same name, whatever the parts contain: a workflow id (always a last part) of ``a:calls``, ``x}{y`` or any other
text names that workflow's own keys and nothing else (the property test in ``tests/unit/test_keys.py`` holds
every builder to it).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

__all__ = ["CHANNELS", "FLEET_KEYS", "SHARD_KEYS", "KeySpec", "Keys", "ShardKeys", "escape", "lua_prelude"]

Scope = Literal["shard", "fleet"]


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One entry of the schema: the kind word, the parts that follow it, and what lives there."""

    kind: str
    params: tuple[str, ...]
    redis_type: str
    content: str
    #: params that are always decimal numbers: never escaped (a cheaper Lua builder on hot paths)
    numeric: tuple[str, ...] = ()


# -- the schema ------------------------------------------------------------------------------------------------

SHARD_KEYS: dict[str, KeySpec] = {
    "wf": KeySpec("wf", ("workflow_id",), "hash", "status, name, version, input, output, error, step, lease, ..."),
    "calls": KeySpec("calls", ("workflow_id",), "hash", "seq -> call record; seq:s status; seq:t/seq:f times"),
    "inbox": KeySpec("inbox", ("workflow_id",), "list", "results delivered to the workflow, in arrival order"),
    "signals": KeySpec("signals", ("workflow_id",), "list", "the workflow's signal log"),
    "events": KeySpec("events", ("workflow_id",), "list", "events sent before anyone waited, oldest first"),
    "task": KeySpec("task", ("seq", "workflow_id"), "hash", "one task call", numeric=("seq",)),
    "task_queue": KeySpec("q", ("queue", "task"), "zset", "ready calls of one task"),
    "step_queue": KeySpec("wq", ("queue", "version", "name"), "zset", "ready steps of running workflows of a version"),
    "step_new": KeySpec("wn", ("queue", "version", "name"), "zset", "ready first steps of new workflows of a version"),
    "order": KeySpec("order", (), "string", "counter that orders ready items: first in, first out"),
    "wake": KeySpec("wake", ("ready_list",), "list", "wake-up token for dispatchers blocked on a ready queue"),
    "processing": KeySpec("proc", ("worker_id",), "hash", "item -> lease of what a dispatcher holds"),
    "holds": KeySpec("holds", ("worker_id",), "hash", "ready queues a dispatcher listens to (direct hand-off)"),
    "lost": KeySpec("lost", (), "hash", "task attempts lost with their dispatcher, until the reaper decides"),
    "stats": KeySpec("stats", (), "hash", "engine totals exported as metrics (halted, ...)"),
    "timers": KeySpec("timers", (), "zset", "timer member -> due ms (Redis clock)"),
    "faults": KeySpec("faults", (), "hash", "retry timer -> {error, at} of work set aside, until it works"),
    "live": KeySpec("live", ("name",), "zset", "'<version>|<worker>' -> lease expiry: who runs a workflow"),
    "step_queues": KeySpec("wqueues", (), "set", "every step ready list, as 'queue\\tname\\tversion'"),
    "task_queues": KeySpec("tqueues", (), "set", "every task ready list, as 'queue\\ttask'"),
    "index": KeySpec("idx", ("status", "version", "name"), "zset", "workflow id -> created ms, per status and version"),
    "kinds": KeySpec("kinds", (), "set", "'<name>\\t<version>' of every workflow version this shard has indexed"),
    "ids": KeySpec("ids", (), "zset", "every workflow id at score 0: the index of id prefixes (lexicographic)"),
    "index_expire": KeySpec("expiry", (), "zset", "finished workflow id -> expiry ms (retention)"),
    "dlq": KeySpec("dlq", (), "zset", "dead-letter entry id -> created ms"),
    "dlq_entry": KeySpec("dlqe", ("entry_id",), "hash", "one dead-letter entry"),
    "sequence": KeySpec("seq", (), "string", "counter of lease tokens and dead-letter entry ids"),
    "keyed": KeySpec("kw", ("event", "key"), "set", "'<id>|<seq>' of workflows waiting on a keyed event"),
    "keyed_count": KeySpec(
        "kwc", ("event", "key"), "hash", "workflow id -> its waits on a keyed event, '' -> all: counted, never read"
    ),
    "bus": KeySpec("bus", (), "list", "the signal bus's inbound messages"),
    "bus_wake": KeySpec("buswake", (), "list", "wake-up token for a blocked signal bus"),
    "bus_alive": KeySpec("busalive", (), "zset", "signal bus -> lease expiry"),
    "bus_forward": KeySpec("busfwd", ("bus_id",), "list", "cross-shard operations one bus is carrying"),
    "workers": KeySpec("workers", (), "zset", "dispatcher -> heartbeat expiry, the reaper's view of the shard"),
    "test_clock": KeySpec("testclock", (), "string", "ms added to the clock; read only by bdurable.testing's scripts"),
    # flow control: a limit lives in the shard its id hashes to, with the calls it limits
    "limit": KeySpec("limit", ("limit",), "hash", "a limit's settings: concurrency, rate_n, rate_ms, queue, key"),
    "permits": KeySpec("permits", ("limit",), "set", "items of the attempts that hold a permit of a limit"),
    "rate": KeySpec("rate", ("limit",), "zset", "starts in a rate limit's sliding window -> ms"),
    "held": KeySpec("held", ("limit",), "zset", "calls a limit holds back -> their ready score"),
    "permit_of": KeySpec("permitof", (), "hash", "item -> the limit whose permit it holds"),
    "limits": KeySpec("limits", (), "set", "the task limits of this shard"),
    "slots": KeySpec("slots", ("limit",), "set", "'<shard>|<id>' of workflows holding a slot of a workflow limit"),
    "slot_queue": KeySpec("slotq", ("limit",), "zset", "'<shard>|<id>' of QUEUED workflows -> priority and order"),
    "slot_limits": KeySpec("slotlimits", (), "set", "the workflow limits of this shard"),
}

FLEET_KEYS: dict[str, KeySpec] = {
    "workers": KeySpec("workers", (), "zset", "dispatcher -> heartbeat expiry (for operators)"),
    "worker": KeySpec("worker", ("worker_id",), "hash", "what one dispatcher runs"),
    "registry": KeySpec("registry", (), "hash", "'<name>@<version>' -> JSON (queue, input schema)"),
    "versions": KeySpec("versions", ("name",), "zset", "version -> first registration ms"),
    "shards": KeySpec("shards", (), "string", "the shard count the prefix was created with"),
    "schedule": KeySpec("sched", ("schedule_id",), "hash", "one schedule: what it runs, when, its state"),
    "schedule_ids": KeySpec("schedids", (), "set", "every schedule's id"),
    "schedules_due": KeySpec("scheddue", (), "zset", "active schedule id -> its next due ms"),
    "lease": KeySpec("lease", ("duty",), "string", "which process holds a fleet-wide duty (firing schedules, ...)"),
}

CHANNELS: dict[str, KeySpec] = {
    "workflow": KeySpec("wf", ("workflow_id",), "channel", "status changes, the finish and signals of one workflow"),
    "signals": KeySpec("signals", (), "channel", "every signal of every workflow (the firehose)"),
    "timers": KeySpec("timers", (), "channel", "an earlier timer was added (wakes the schedulers)"),
    "cancel": KeySpec("cancel", (), "channel", "'<seq>|<id>' of task calls to stop wherever they run"),
    "keepalive": KeySpec("keepalive", (), "channel", "nobody publishes here: keeps a shared subscription open"),
}


# -- building names --------------------------------------------------------------------------------------------


def escape(part: str) -> str:
    """A part that is not the last one, made free of ``:`` so that it ends where the next ``:`` begins."""
    return part.replace("%", "%25").replace(":", "%3A")


def _name(tag: str, spec: KeySpec, parts: tuple[str | int, ...]) -> str:
    if len(parts) != len(spec.params):
        raise TypeError(f"key {spec.kind!r} takes {len(spec.params)} parts ({', '.join(spec.params)}), got {parts!r}")
    if not parts:
        return f"{tag}:{spec.kind}"
    middle = "".join(
        f":{int(part)}" if name in spec.numeric else f":{escape(str(part))}"
        for name, part in zip(spec.params[:-1], parts[:-1], strict=True)
    )
    return f"{tag}:{spec.kind}{middle}:{parts[-1]}"


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """Keys of one shard; all share one hash tag."""

    tag: str

    @property
    def number(self) -> int:
        """The shard's number (its tag is ``{<prefix>:<number>}``)."""
        return int(self.tag[self.tag.rindex(":") + 1 : -1])

    def _key(self, entry: str, *parts: str | int) -> str:
        return _name(self.tag, SHARD_KEYS[entry], parts)

    def pattern(self, entry: str) -> str:
        """A ``SCAN MATCH`` pattern for every key of one entry of the schema in this shard (tools, tests)."""
        spec = SHARD_KEYS[entry]
        return f"{self.tag}:{spec.kind}" + (":*" if spec.params else "")

    @staticmethod
    def entry_of(key_suffix: str) -> str | None:
        """Which entry of the schema a key belongs to, from what follows its tag (``None``: not ours)."""
        kind = key_suffix.lstrip(":").split(":", 1)[0]
        return next((entry for entry, spec in SHARD_KEYS.items() if spec.kind == kind), None)

    # a workflow's own keys (its id always comes last)
    def wf(self, workflow_id: str) -> str:
        return self._key("wf", workflow_id)

    def calls(self, workflow_id: str) -> str:
        return self._key("calls", workflow_id)

    def inbox(self, workflow_id: str) -> str:
        return self._key("inbox", workflow_id)

    def signals(self, workflow_id: str) -> str:
        return self._key("signals", workflow_id)

    def events(self, workflow_id: str) -> str:
        return self._key("events", workflow_id)

    def task(self, workflow_id: str, seq: int) -> str:
        return self._key("task", seq, workflow_id)

    # queues and what dispatchers hold
    def task_queue(self, queue: str, task: str) -> str:
        """Ready calls of one task on one queue: a dispatcher only listens for tasks it has."""
        return self._key("task_queue", queue, task)

    def step_queue(self, queue: str, name: str, version: str) -> str:
        """Ready steps of running workflows of one version: a dispatcher only listens for versions it holds."""
        return self._key("step_queue", queue, version, name)

    def step_new(self, queue: str, name: str, version: str) -> str:
        """Ready first steps of new workflows of one version: served after the continuations."""
        return self._key("step_new", queue, version, name)

    @property
    def order(self) -> str:
        return self._key("order")

    @property
    def lost(self) -> str:
        return self._key("lost")

    @property
    def stats(self) -> str:
        return self._key("stats")

    @property
    def faults(self) -> str:
        return self._key("faults")

    @property
    def test_clock(self) -> str:
        return self._key("test_clock")

    # flow control
    def limit(self, limit: str) -> str:
        return self._key("limit", limit)

    def permits(self, limit: str) -> str:
        return self._key("permits", limit)

    def rate(self, limit: str) -> str:
        return self._key("rate", limit)

    def held(self, limit: str) -> str:
        return self._key("held", limit)

    @property
    def permit_of(self) -> str:
        return self._key("permit_of")

    @property
    def limits(self) -> str:
        return self._key("limits")

    def slots(self, limit: str) -> str:
        return self._key("slots", limit)

    def slot_queue(self, limit: str) -> str:
        return self._key("slot_queue", limit)

    @property
    def slot_limits(self) -> str:
        return self._key("slot_limits")

    def wake(self, ready_list: str) -> str:
        return self._key("wake", ready_list)

    def processing(self, worker_id: str) -> str:
        return self._key("processing", worker_id)

    def holds(self, worker_id: str) -> str:
        return self._key("holds", worker_id)

    def live(self, name: str) -> str:
        return self._key("live", name)

    @property
    def workers(self) -> str:
        return self._key("workers")

    @property
    def timers(self) -> str:
        return self._key("timers")

    @property
    def step_queues(self) -> str:
        return self._key("step_queues")

    @property
    def task_queues(self) -> str:
        return self._key("task_queues")

    # listing, retention, dead letters
    def index(self, status: str, name: str, version: str) -> str:
        """Workflows of one status and one workflow version, by created time (every workflow is in one)."""
        return self._key("index", status, version, name)

    @property
    def kinds(self) -> str:
        return self._key("kinds")

    @property
    def ids(self) -> str:
        return self._key("ids")

    @property
    def index_expire(self) -> str:
        return self._key("index_expire")

    @property
    def dlq(self) -> str:
        return self._key("dlq")

    def dlq_entry(self, entry_id: str) -> str:
        return self._key("dlq_entry", entry_id)

    @property
    def sequence(self) -> str:
        """A counter for lease tokens and dead-letter entry ids."""
        return self._key("sequence")

    # events and the signal bus
    def keyed(self, event: str, key: str) -> str:
        return self._key("keyed", event, key)

    def keyed_count(self, event: str, key: str) -> str:
        """How many waits each workflow has on a keyed event (and all together, field ''): a publish counts
        the workflows it wakes from this, without reading the set of waits."""
        return self._key("keyed_count", event, key)

    @property
    def bus(self) -> str:
        return self._key("bus")

    @property
    def bus_wake(self) -> str:
        return self._key("bus_wake")

    @property
    def bus_alive(self) -> str:
        return self._key("bus_alive")

    def bus_forward(self, bus_id: str) -> str:
        return self._key("bus_forward", bus_id)


@dataclass(frozen=True, slots=True)
class Keys:
    """The whole key schema for one prefix."""

    prefix: str
    shards: int = 1

    def shard_of(self, workflow_id: str) -> int:
        """The shard a workflow lives in: a stable hash of its id."""
        if self.shards == 1:
            return 0
        return zlib.crc32(workflow_id.encode()) % self.shards

    def shard(self, index: int) -> ShardKeys:
        return ShardKeys(shard_tag(self.prefix, index))

    def for_workflow(self, workflow_id: str) -> ShardKeys:
        return self.shard(self.shard_of(workflow_id))

    def all_shards(self) -> list[ShardKeys]:
        return [self.shard(i) for i in range(self.shards)]

    @property
    def tag(self) -> str:
        """The fleet-wide hash tag, ``{<prefix>}``."""
        return fleet_tag(self.prefix)

    def _key(self, entry: str, *parts: str) -> str:
        return _name(self.tag, FLEET_KEYS[entry], parts)

    def _channel(self, entry: str, *parts: str) -> str:
        return _name(self.tag, CHANNELS[entry], parts)

    @property
    def workers(self) -> str:
        return self._key("workers")

    def worker(self, worker_id: str) -> str:
        return self._key("worker", worker_id)

    @property
    def registry(self) -> str:
        return self._key("registry")

    def versions(self, name: str) -> str:
        return self._key("versions", name)

    @property
    def shard_count(self) -> str:
        return self._key("shards")

    def schedule(self, schedule_id: str) -> str:
        return self._key("schedule", schedule_id)

    @property
    def schedule_ids(self) -> str:
        return self._key("schedule_ids")

    @property
    def schedules_due(self) -> str:
        return self._key("schedules_due")

    def lease(self, duty: str) -> str:
        return self._key("lease", duty)

    # channels
    def workflow_channel(self, workflow_id: str) -> str:
        return self._channel("workflow", workflow_id)

    @property
    def signals_channel(self) -> str:
        return self._channel("signals")

    @property
    def timers_channel(self) -> str:
        return self._channel("timers")

    @property
    def cancel_channel(self) -> str:
        return self._channel("cancel")

    @property
    def keepalive_channel(self) -> str:
        return self._channel("keepalive")


def shard_tag(prefix: str, index: int) -> str:
    return f"{{{prefix}:{index}}}"


def fleet_tag(prefix: str) -> str:
    return f"{{{prefix}}}"


# -- the Lua mirror, generated ---------------------------------------------------------------------------------

_LUA_NAMES = {  # Lua names that differ from the Python entry name (kept short where scripts use them a lot)
    ("shard", "processing"): "proc",
    ("shard", "sequence"): "seq",
    ("fleet", "workers"): "fleet_workers",
    ("fleet", "worker"): "fleet_worker",
}


def _lua_entry(scope: str, entry: str, spec: KeySpec, tag: str, prefix: str) -> tuple[str, str]:
    """One entry's Lua: (its definition, and for a constant key its assignment in ``bind_keys``, else '')."""
    name = _LUA_NAMES.get((scope, entry), entry)
    if not spec.params:
        constant = f"{prefix.upper()}{name.upper()}"
        return f"local {constant}", f"  {constant} = {tag} .. ':{spec.kind}'"
    pieces = [f"'{':'}{spec.kind}:'"]
    for index, param in enumerate(spec.params):
        last = index == len(spec.params) - 1
        if last or param in spec.numeric:
            pieces.append(param)
        else:
            pieces.append(f"esc({param})")
        if not last:
            pieces.append("':'")
    body = " .. ".join(pieces)
    return f"local function {prefix.lower()}{name}({', '.join(spec.params)}) return {tag} .. {body} end", ""


def lua_prelude() -> str:
    """The Lua helpers of every key and channel, at the head of the scripts' library (see :mod:`bdurable.lua`).

    Convention: ``KEYS[1]`` is the shard's tag ``T`` and ``ARGV[1]`` the fleet tag ``G``; shard keys are
    ``k_<entry>(...)``/``K_<ENTRY>``, fleet keys ``g_<entry>(...)``/``G_<ENTRY>``, channels ``ch_<entry>(...)``.
    The library is loaded once (a Redis Function library) and serves many calls, so the tags are bound per
    call: ``bind_keys(KEYS, ARGV)`` sets ``T``, ``G`` and the constant keys before a script's body runs.
    """
    shard = [_lua_entry("shard", entry, spec, "T", "k_") for entry, spec in SHARD_KEYS.items()]
    fleet = [_lua_entry("fleet", entry, spec, "G", "g_") for entry, spec in FLEET_KEYS.items()]
    fleet += [_lua_entry("channel", entry, spec, "G", "ch_") for entry, spec in CHANNELS.items()]
    lines = [
        "-- Generated from bdurable/keys.py when the scripts are loaded: the key schema's only spelling.",
        "local T, G",
        "local ESCAPES = {['%'] = '%25', [':'] = '%3A'}",
        "local function esc(part) return (string.gsub(part, '[%%:]', ESCAPES)) end",
        *(definition for definition, _ in shard + fleet),
        "-- The constant keys are rebuilt only when a call's tags differ from the previous call's.",
        "local function bind_keys(keys, argv)",
        "  if keys[1] ~= T then",
        "    T = keys[1]",
        *(f"  {binding}" for _, binding in shard if binding),
        "  end",
        "  if argv[1] ~= G then",
        "    G = argv[1]",
        *(f"  {binding}" for _, binding in fleet if binding),
        "  end",
        "end",
    ]
    return "\n".join(lines) + "\n"
