"""The key schema alone: no id, of any content, can name a key of another workflow or of the engine.

Property-based over every builder of ``bdurable.keys`` (shard keys, fleet keys, channels), with adversarial
parts (``:``, ``|``, ``{``, ``}``, ``%``, spaces, any Unicode), plus the generated Lua kept equal to Python.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bdurable.keys import CHANNELS, FLEET_KEYS, SHARD_KEYS, Keys, KeySpec, ShardKeys, lua_prelude

# Parts made of the characters that break naive schemas, mixed with ordinary text.
TRICKY = st.sampled_from([":", "|", "{", "}", "%", "%3A", "%25", " ", "\t", "calls", "wf", "inbox", "é", "🙂"])
PART = st.lists(st.one_of(TRICKY, st.text(min_size=0, max_size=6)), min_size=1, max_size=6).map("".join)
PREFIX = st.sampled_from(["bdurable", "p", "p-1", "bdurable.x"])

SHARD_METHODS = {name: name for name in SHARD_KEYS}
FLEET_METHODS = {"workers": "workers", "worker": "worker", "registry": "registry", "versions": "versions",
                 "shards": "shard_count", "schedule": "schedule", "schedule_ids": "schedule_ids",
                 "schedules_due": "schedules_due", "lease": "lease"}  # fmt: skip
CHANNEL_METHODS = {"workflow": "workflow_channel", "signals": "signals_channel", "timers": "timers_channel",
                   "cancel": "cancel_channel", "keepalive": "keepalive_channel"}  # fmt: skip


def _parts(spec: KeySpec) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(*(st.integers(0, 10**9) if p in spec.numeric else PART for p in spec.params))


def _call(target: Any, method: str, spec: KeySpec, parts: tuple[Any, ...]) -> str:
    """Call a builder with parts given in the key's order (builders name their parameters like the table)."""
    attribute = getattr(target, method)
    if not callable(attribute):
        assert parts == ()
        return str(attribute)
    return str(attribute(**dict(zip(spec.params, parts, strict=True))))


@st.composite
def requests(draw: st.DrawFn) -> tuple[Any, ...]:
    """What a caller can ask the schema for: any builder, any prefix and shard, adversarial parts."""
    prefix = draw(PREFIX)
    if draw(st.booleans()):
        entry = draw(st.sampled_from(sorted(SHARD_KEYS)))
        return ("shard", prefix, draw(st.integers(0, 3)), entry, draw(_parts(SHARD_KEYS[entry])))
    entry = draw(st.sampled_from(sorted(FLEET_KEYS)))
    return ("fleet", prefix, entry, draw(_parts(FLEET_KEYS[entry])))


def build(request: tuple[Any, ...]) -> str:
    keys = Keys(request[1], shards=4)
    if request[0] == "shard":
        _, _, shard, entry, parts = request
        return _call(keys.shard(shard), SHARD_METHODS[entry], SHARD_KEYS[entry], parts)
    _, _, entry, parts = request
    return _call(keys, FLEET_METHODS[entry], FLEET_KEYS[entry], parts)


def parse(name: str) -> tuple[Any, ...]:
    """The one way a key name splits back into what was asked for (written here, independently of the code)."""
    close = name.index("}")
    tag, rest = name[1:close], name[close + 1 :]
    assert rest.startswith(":")
    kind, _, tail = rest[1:].partition(":")
    prefix, _, shard = tag.partition(":")
    table = SHARD_KEYS if shard else FLEET_KEYS
    entry, spec = next((e, s) for e, s in table.items() if s.kind == kind)
    pieces = tail.split(":", len(spec.params) - 1) if spec.params else []
    parts = tuple(
        int(p) if n in spec.numeric else p.replace("%3A", ":").replace("%25", "%") if i < len(pieces) - 1 else p
        for i, (n, p) in enumerate(zip(spec.params, pieces, strict=True))
    )
    return ("shard", prefix, int(shard), entry, parts) if shard else ("fleet", prefix, entry, parts)


@settings(max_examples=1000)
@given(requests())
def test_every_key_splits_back_into_exactly_what_was_asked_for(request: tuple[Any, ...]) -> None:
    """Round trip: a name determines its request, so two different requests never give the same name."""
    assert parse(build(request)) == request


@settings(max_examples=500)
@given(requests(), requests())
def test_two_different_requests_never_give_the_same_key(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    assert (build(a) == build(b)) == (a == b)


@settings(max_examples=500)
@given(PART, st.sampled_from(["calls", "inbox", "signals", "events", "wf"]))
def test_an_id_that_spells_another_workflows_key_stays_its_own(workflow_id: str, suffix: str) -> None:
    """The scenario of the integrity issue: id ``a`` and id ``a:calls`` (and every variant) never share a key."""
    shard = Keys("bdurable").shard(0)
    victim, attacker = workflow_id, f"{workflow_id}:{suffix}"
    own = {builder(victim) for builder in (shard.wf, shard.calls, shard.inbox, shard.signals, shard.events)}
    theirs = {builder(attacker) for builder in (shard.wf, shard.calls, shard.inbox, shard.signals, shard.events)}
    assert own.isdisjoint(theirs)


@settings(max_examples=300)
@given(PREFIX, st.sampled_from(sorted(CHANNELS)), st.sampled_from(sorted(CHANNELS)), PART, PART)
def test_channels_are_distinct_too(prefix: str, entry_a: str, entry_b: str, part_a: str, part_b: str) -> None:
    keys = Keys(prefix)
    a = _call(keys, CHANNEL_METHODS[entry_a], CHANNELS[entry_a], (part_a,) if CHANNELS[entry_a].params else ())
    b = _call(keys, CHANNEL_METHODS[entry_b], CHANNELS[entry_b], (part_b,) if CHANNELS[entry_b].params else ())
    same_request = entry_a == entry_b and (not CHANNELS[entry_a].params or part_a == part_b)
    assert (a == b) == same_request


def test_every_key_and_channel_carries_its_prefixs_hash_tag_first() -> None:
    keys = Keys("pre", shards=2)
    shard = keys.shard(1)
    assert shard.wf("x}{y").startswith("{pre:1}:")
    assert keys.registry.startswith("{pre}:")
    assert keys.workflow_channel("{other}").startswith("{pre}:")
    # Redis Cluster hashes the first {...}: an id with braces never moves a key to another slot.
    assert re.match(r"\{([^}]*)\}", shard.wf("{evil}")).group(1) == "pre:1"  # type: ignore[union-attr]


def test_the_python_builders_cover_the_schema_exactly() -> None:
    assert set(SHARD_METHODS) == set(SHARD_KEYS)
    assert set(FLEET_METHODS) == set(FLEET_KEYS)
    assert set(CHANNEL_METHODS) == set(CHANNELS)
    public = {n for n in dir(ShardKeys) if not n.startswith("_")} - {"tag", "number", "pattern", "entry_of"}
    assert public == set(SHARD_KEYS), "every ShardKeys builder comes from the table, and every entry has one"


def test_the_lua_prelude_defines_one_helper_per_entry() -> None:
    prelude = lua_prelude()
    for entry, spec in SHARD_KEYS.items():
        stem = {"processing": "proc", "sequence": "seq"}.get(entry, entry)
        name = f"K_{stem.upper()}" if not spec.params else f"k_{stem}"
        assert re.search(rf"local (function )?{name}\b", prelude), name
    assert "local function ch_workflow(workflow_id)" in prelude


def test_the_architecture_doc_lists_every_key_with_its_parts() -> None:
    """docs/architecture.md's key table is how operators read a Redis: every key and channel of the schema is
    there, named with as many parts as the code gives it (it once showed the status index without its version
    and name, and left three keys out)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    rows = [line for line in doc.splitlines() if re.match(r"\| (channel )?`[TG]:", line)]
    documented: set[tuple[str, str, int]] = set()
    for row in rows:
        first_cell = row.split(" | ")[0]
        channel = first_cell.startswith("| channel")
        for name in re.findall(r"`([TG]:[^`]*)`", first_cell):
            letter, kind, *parts = name.split(":")
            documented.add(("channel" if channel else letter, kind, len(parts)))
    expected = {("T", spec.kind, len(spec.params)) for spec in SHARD_KEYS.values()}
    expected |= {("G", spec.kind, len(spec.params)) for spec in FLEET_KEYS.values()}
    expected |= {("channel", spec.kind, len(spec.params)) for spec in CHANNELS.values()}
    assert expected - documented == set(), "keys of bdurable.keys missing from docs/architecture.md (or wrong parts)"
    assert documented - expected == set(), "docs/architecture.md lists keys bdurable.keys does not have"
