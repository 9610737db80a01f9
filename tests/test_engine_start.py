"""Starting workflows: idempotency, by name and version, typed input validation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import engine_app
import pytest
from support import InProcessRoles, eventually, token

from bdurable import (
    Client,
    InvalidInputError,
    Status,
    UnknownWorkflowError,
    WorkflowAlreadyExistsError,
)
from bdurable.keys import Keys


async def registered(client: Client, prefix: str, *entries: str) -> bool:
    fields = await client.store.redis.hkeys(Keys(prefix).registry)
    return all(entry in fields for entry in entries)


async def keys_of(client: Client, prefix: str, workflow_id: str) -> list[str]:
    return [key async for key in client.store.redis.scan_iter(match=f"*{prefix}*{workflow_id}*")]


async def test_starting_the_same_id_twice_runs_once(client: Client, roles: InProcessRoles, prefix: str) -> None:
    t = token()
    first = await client.start(engine_app.count_flow, {"token": t}, workflow_id="order-1")
    second = await client.start(engine_app.count_flow, {"token": t}, workflow_id="order-1")
    assert first.workflow_id == second.workflow_id == "order-1"
    roles.dispatcher(engine_app)
    assert await first.result(timeout=5) == "order-1"
    third = await client.start(engine_app.count_flow, {"token": t}, workflow_id="order-1")
    assert third.workflow_id == "order-1"
    assert third.status == Status.COMPLETED
    state = await third.state()
    assert state is not None
    assert state.status == Status.COMPLETED
    assert engine_app.CALLS[t] == ["order-1"]  # one run, one task execution
    assert [state.workflow_id for state in (await client.list()).items] == ["order-1"]


async def test_same_id_under_another_workflow_name_is_refused(client: Client) -> None:
    await client.start(engine_app.quick, 1, workflow_id="shared-id")
    with pytest.raises(WorkflowAlreadyExistsError):
        await client.start(engine_app.sleeper, {}, workflow_id="shared-id")
    state = await client.get_state("shared-id")
    assert state is not None
    assert state.name == "quick"


async def test_start_by_registered_name_and_by_explicit_version(
    client: Client, roles: InProcessRoles, prefix: str
) -> None:
    with pytest.raises(UnknownWorkflowError):
        await client.start("quick", 1)  # nothing registered yet
    roles.dispatcher(engine_app)
    await eventually(lambda: registered(client, prefix, "quick@1"), timeout=5)
    by_name = await client.start("quick", {"hello": "world"})
    assert await by_name.result(timeout=5) == {"hello": "world"}
    by_version = await client.start("quick", [1, 2], version="1")
    assert await by_version.result(timeout=5) == [1, 2]
    state = await by_version.state()
    assert state is not None
    assert (state.name, state.version) == ("quick", "1")

    with pytest.raises(UnknownWorkflowError):
        await client.start("no_such_workflow", {}, workflow_id="never-1")
    with pytest.raises(UnknownWorkflowError):
        await client.start("quick", {}, version="9", workflow_id="never-2")
    assert await client.get_state("never-1") is None
    assert await client.get_state("never-2") is None


async def test_typed_input_is_converted_for_the_workflow(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app)
    order = await client.start(engine_app.typed_order, engine_app.Order(order_id="o-1", amount=3))
    assert await order.result(timeout=5) == {"type": "Order", "order_id": "o-1", "amount": 3}
    point = await client.start(engine_app.typed_point, {"x": 2, "y": 5})
    assert await point.result(timeout=5) == {"type": "Point", "sum": 7}


async def test_a_handle_started_with_the_definition_returns_the_annotated_output(
    client: Client, roles: InProcessRoles
) -> None:
    """As a parent receives its child's output: started by definition, result() gives the return annotation's
    type; by name, or by id, the client cannot know the type and gives plain JSON."""
    roles.dispatcher(engine_app)
    by_definition = await client.start(engine_app.mirrored_point, engine_app.Point(x=1, y=2))
    assert await by_definition.result(timeout=5) == engine_app.Point(x=2, y=1)
    [batched] = await client.start_many(engine_app.mirrored_point, [{"x": 3, "y": 4}])
    assert await batched.result(timeout=5) == engine_app.Point(x=4, y=3)
    by_name = await client.start("mirrored_point", {"x": 5, "y": 6})
    assert await by_name.result(timeout=5) == {"x": 6, "y": 5}
    assert await client.result(by_definition.workflow_id) == {"x": 2, "y": 1}


async def test_invalid_typed_input_by_object_writes_nothing(client: Client, prefix: str) -> None:
    with pytest.raises(InvalidInputError):
        await client.start(engine_app.typed_order, {"order_id": "o-1", "amount": "lots"}, workflow_id="bad-1")
    with pytest.raises(InvalidInputError):
        await client.start(engine_app.typed_point, {"x": 1}, workflow_id="bad-2")
    assert await client.get_state("bad-1") is None
    assert await client.get_state("bad-2") is None
    assert await keys_of(client, prefix, "bad-") == []


async def test_an_id_that_is_not_valid_unicode_is_refused_by_every_call(client: Client, prefix: str) -> None:
    # Redis holds UTF-8: such an id, once encoded, would name another workflow ("?x"), and a wait on it would
    # follow a channel that never answers. (A CLI argument with bytes that are not UTF-8 arrives like this.)
    for bad in ("\ud800x", "\udcfex"):
        calls: list[Awaitable[object]] = [
            client.start(engine_app.calls_flow, {}, workflow_id=bad),
            client.get_state(bad),
            client.result(bad, timeout=1),
            client.send_event(bad, "go", 1),
            client.cancel(bad),
            client.history(bad),
        ]
        for call in calls:
            with pytest.raises(InvalidInputError, match="valid Unicode"):
                await call
    assert await keys_of(client, prefix, "x") == []


async def test_starting_something_that_is_not_a_workflow_is_a_type_error(client: Client) -> None:
    with pytest.raises(TypeError, match=r"not the task 'engine_app\.add' \(a task runs inside a workflow\)"):
        await client.start(engine_app.add, {})  # type: ignore[arg-type]
    for other in (42, None):
        with pytest.raises(TypeError, match=r"start takes a @workflow \(or a workflow's name\)"):
            await client.start(other, {})  # type: ignore[arg-type]


async def test_a_payload_that_is_not_valid_unicode_is_refused_like_any_unserialisable_one(
    client: Client, prefix: str
) -> None:
    for payload in ({"text": "\ud800"}, {"list": ["\udcfe"]}):
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            await client.start(engine_app.calls_flow, payload, workflow_id="lone")
    assert await client.get_state("lone") is None


async def test_invalid_typed_input_by_name_is_checked_against_the_registered_schema(
    client: Client, roles: InProcessRoles, prefix: str
) -> None:
    dispatcher = roles.dispatcher(engine_app)
    await eventually(lambda: registered(client, prefix, "typed_order@1", "typed_point@1"), timeout=5)
    # no dispatcher has to run anything for the check: it happens in the client, before any write
    await roles.stop(dispatcher)
    with pytest.raises(InvalidInputError):
        await client.start("typed_order", {"order_id": "o-1", "amount": "lots"}, workflow_id="bad-3")
    with pytest.raises(InvalidInputError):
        await client.start("typed_point", {"x": 1}, workflow_id="bad-4")
    assert await client.get_state("bad-3") is None
    assert await client.get_state("bad-4") is None
    assert await keys_of(client, prefix, "bad-") == []
    good = await client.start("typed_order", {"order_id": "o-2", "amount": 4}, workflow_id="good-1")
    assert good.workflow_id == "good-1"
    assert await client.get_state("good-1") is not None


async def test_typed_input_passes_or_fails_alike_by_object_and_by_name(
    client: Client, roles: InProcessRoles, prefix: str
) -> None:
    """By JSON's rules both ways: no number in a string, no bool for a number; a dict makes the dataclass."""
    dispatcher = roles.dispatcher(engine_app)
    await eventually(lambda: registered(client, prefix, "typed_point@1"), timeout=5)
    await roles.stop(dispatcher)  # the checks happen in the client
    for wrong in ({"x": "5", "y": 1}, {"x": True, "y": 1}, {"x": 1.5, "y": 1}, {"x": 1}):
        with pytest.raises(InvalidInputError, match="does not match"):
            await client.start(engine_app.typed_point, wrong)
        with pytest.raises(InvalidInputError):
            await client.start("typed_point", wrong)
    for right in ({"x": 5, "y": 1}, engine_app.Point(5, 1)):
        by_object = await client.start(engine_app.typed_point, right)
        assert (await client.get_state(by_object.workflow_id)) is not None
    assert (await client.get_state((await client.start("typed_point", {"x": 5, "y": 1})).workflow_id)) is not None


async def test_json_edge_values_round_trip_and_nan_is_refused(
    client: Client, roles: InProcessRoles, prefix: str
) -> None:
    """Payloads are JSON: values at its edges come back as they went in, each of its type, and a float JSON
    cannot hold (NaN, an infinity) is refused before anything is written, whatever encoder spells the rest."""
    roles.dispatcher(engine_app)
    edges = {
        "floats": [1e-7, 2.5e-5, 1e16, 1.7976931348623157e308, 5e-324, -0.0, 0.1],
        "ints": [2**70, -(2**63), 0],
        "text": "BaNaNa, Infinity, NaN: only words \u00e9 \u2028 \x00 \U0001f600",
        "mixed": [True, None, 1, 1.0, {"": []}],
    }
    output = await (await client.start(engine_app.quick, edges)).result(timeout=5)
    assert output == edges
    assert [type(v) for v in output["mixed"]] == [bool, type(None), int, float, dict]
    assert [repr(v) for v in output["floats"]] == [repr(v) for v in edges["floats"]]  # -0.0 stays -0.0
    for bad in (float("nan"), float("inf"), {"deep": [1, float("-inf")]}):
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            await client.start(engine_app.quick, bad, workflow_id="nan-1")
    assert await keys_of(client, prefix, "nan-") == []


async def test_start_many_starts_thousands_in_a_few_round_trips(client: Client, roles: InProcessRoles) -> None:
    roles.dispatcher(engine_app, concurrency=100)
    handles = await client.start_many(engine_app.quick, [{"n": n} for n in range(2500)])
    assert len({h.workflow_id for h in handles}) == 2500
    results = await asyncio.gather(*(h.result(timeout=60) for h in handles))
    assert results == [{"n": n} for n in range(2500)]
    again = await client.start_many(engine_app.quick, [{"n": 0}, {"n": 1}],
                                    workflow_ids=[handles[0].workflow_id, handles[1].workflow_id])  # fmt: skip
    assert [h.workflow_id for h in again] == [handles[0].workflow_id, handles[1].workflow_id]  # idempotent
    assert await again[0].result(timeout=5) == {"n": 0}  # the existing run, not a second one


async def test_start_many_queues_its_workflows_in_the_order_given(client: Client, roles: InProcessRoles) -> None:
    """A batch reserves its places in line at once and adds to its sets at its end: still first in, first out,
    across batches and around ids that already exist (their reserved places stay unused)."""
    await client.start(engine_app.quick, "old", workflow_id="line-0120")
    ids = [f"line-{n:04d}" for n in range(260)]  # three script calls, the existing id in the second
    handles = await client.start_many(engine_app.quick, list(range(260)), workflow_ids=ids)
    assert (await client.get_state("line-0120")).input == "old"  # type: ignore[union-attr]
    roles.dispatcher(engine_app, concurrency=1)  # one step at a time: they finish in the order they were queued
    assert await asyncio.gather(*(h.result(timeout=60) for h in handles[119:122])) == [119, "old", 121]
    await asyncio.gather(*(h.result(timeout=60) for h in handles))
    for shard in range(client.keys.shards):  # the order of work holds per shard (docs/programming-model.md)
        in_shard = [i for i in ids if i != "line-0120" and client.keys.shard_of(i) == shard]
        finished = [(await client.get_state(i)).updated_at for i in in_shard]  # type: ignore[union-attr]
        assert finished == sorted(finished), shard
    assert (await client.reads.counts())[Status.COMPLETED] == 260


async def test_start_many_validates_every_input_before_writing_anything(client: Client, prefix: str) -> None:
    inputs = [{"order_id": f"o-{n}", "amount": n} for n in range(10)] + [{"order_id": "o-x", "amount": "lots"}]
    with pytest.raises(InvalidInputError):
        await client.start_many(engine_app.typed_order, inputs, workflow_ids=[f"many-{n}" for n in range(11)])
    assert await keys_of(client, prefix, "many-") == []
    with pytest.raises(InvalidInputError, match="distinct"):
        await client.start_many(engine_app.quick, [1, 2], workflow_ids=["same", "same"])
    with pytest.raises(InvalidInputError, match="2 workflow ids for 3 inputs"):
        await client.start_many(engine_app.quick, [1, 2, 3], workflow_ids=["a", "b"])
    await client.start(engine_app.typed_order, {"order_id": "o-1", "amount": 1}, workflow_id="taken")
    with pytest.raises(WorkflowAlreadyExistsError, match="'taken'"):
        await client.start_many(engine_app.quick, [1, 2], workflow_ids=["taken", "free"])
    state = await client.get_state("free")
    assert state is not None  # the others were started
