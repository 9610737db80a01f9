"""The key schema against a real Redis: the Lua helpers build the same names as Python, and one workflow's id
can never reach another workflow's keys (the scenario of the integrity issue, end to end)."""

from __future__ import annotations

import asyncio

import engine_app
from support import InProcessRoles, eventually

from bdurable import Client, Settings, Status
from bdurable.keys import _LUA_NAMES, FLEET_KEYS, SHARD_KEYS, lua_prelude

SAMPLES = {"workflow_id": "a:calls|{x}%3A é", "seq": 7, "queue": "q:1%", "task": "t:x", "version": "1:0",
           "name": "n:m", "ready_list": "{p:0}:q:a:b", "worker_id": "w:1", "status": "RUNNING",
           "entry_id": "0-1", "event": "e:v", "key": "k:1", "bus_id": "b:2", "limit": "t\tpay:x|{k}%",
           "schedule_id": "daily:{r}%3A", "duty": "sched:ules"}  # fmt: skip


async def test_the_generated_lua_builds_every_key_exactly_like_python(client: Client) -> None:
    shard = client.keys.shard(0)
    for entry, spec in SHARD_KEYS.items():
        stem = {"processing": "proc", "sequence": "seq"}.get(entry, entry)
        args = [SAMPLES[p] for p in spec.params]
        call = f"k_{stem}({', '.join(f'ARGV[{i + 2}]' for i in range(len(args)))})" if args else f"K_{stem.upper()}"
        script = f"{lua_prelude()}\nbind_keys(KEYS, ARGV)\nreturn {call}"
        from_lua = await client.store.redis.eval(script, 1, shard.tag, client.keys.tag, *args)
        from_python = getattr(shard, entry)
        expected = from_python(**dict(zip(spec.params, args, strict=True))) if args else from_python
        assert from_lua == expected, entry
    for entry, spec in FLEET_KEYS.items():
        stem = _LUA_NAMES.get(("fleet", entry), entry)
        args = [SAMPLES[p] for p in spec.params]
        call = f"g_{stem}({', '.join(f'ARGV[{i + 2}]' for i in range(len(args)))})" if args else f"G_{stem.upper()}"
        script = f"{lua_prelude()}\nbind_keys(KEYS, ARGV)\nreturn {call}"
        from_lua = await client.store.redis.eval(script, 1, shard.tag, client.keys.tag, *args)
        from_python = getattr(client.keys, {"shards": "shard_count"}.get(entry, entry))
        expected = from_python(**dict(zip(spec.params, args, strict=True))) if args else from_python
        assert from_lua == expected, entry


async def test_a_workflow_whose_id_spells_another_ones_key_never_touches_it(settings: Settings) -> None:
    """Id ``a`` sleeps; ``a:calls`` (which named ``a``'s call records under the old schema) runs, finishes and
    expires; ``a`` keeps its whole history and finishes as if alone."""
    short = settings.with_overrides(retention="500ms")
    roles = InProcessRoles(short)
    try:
        roles.dispatcher(engine_app)
        roles.scheduler()
        async with Client(settings=short) as client:
            victim = await client.start(engine_app.sleeper, {"sleep": "2s"}, workflow_id="a")
            await eventually(lambda: _status(client, "a", Status.SLEEPING))
            shard = client.keys.for_workflow("a")
            calls_before = await client.store.redis.hgetall(shard.calls("a"))
            for suffix in ("calls", "inbox", "signals", "events"):
                attacker = await client.start(engine_app.quick, {"from": suffix}, workflow_id=f"a:{suffix}")
                assert await attacker.result(timeout=10) == {"from": suffix}
            await eventually(lambda: _all_expired(client, ["a:calls", "a:inbox", "a:signals", "a:events"]), 10)
            assert await client.store.redis.hgetall(shard.calls("a")) == calls_before  # untouched by the others
            state = await client.get_state("a")
            assert state is not None
            assert (state.status, state.input) == (Status.SLEEPING, {"sleep": "2s"})
            assert await victim.result(timeout=10) == "woke"
            assert [(h.kind, h.status) for h in await client.history("a")] == [("sleep", "done")]
    finally:
        await roles.stop_all()


async def _status(client: Client, workflow_id: str, status: str) -> bool:
    state = await client.get_state(workflow_id)
    return state is not None and state.status == status


async def _all_expired(client: Client, ids: list[str]) -> bool:
    states = await asyncio.gather(*(client.get_state(i) for i in ids))
    return all(s is None for s in states)
