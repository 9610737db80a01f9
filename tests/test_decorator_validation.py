"""``@task`` and ``@workflow`` refuse options that would silently do something else, at import time: a bool where an
integer is meant, a key without a limit, a wrong type, an empty name. The values at the edge of what is allowed
still define tasks and workflows that run, end to end on the test's Redis."""

from __future__ import annotations

import types
import uuid
from typing import Any

import pytest
from support import InProcessRoles

from bdurable import Client, Context, task, workflow


async def _noop(order_id: str) -> str:
    return order_id


async def _flow(ctx: Context, input: Any) -> Any:
    return input


@pytest.mark.parametrize("concurrency", [True, False, 0, -1, 1.5, "5"])
def test_a_task_concurrency_that_is_not_a_positive_int_is_refused(concurrency: Any) -> None:
    with pytest.raises(ValueError, match=r"task _noop: concurrency must be a positive integer, not "):
        task(concurrency=concurrency)(_noop)


@pytest.mark.parametrize("concurrency", [True, 0, "5"])
def test_a_workflow_concurrency_that_is_not_a_positive_int_is_refused(concurrency: Any) -> None:
    with pytest.raises(ValueError, match=r"workflow _flow: concurrency must be a positive integer, not "):
        workflow(version="1", concurrency=concurrency)(_flow)


def test_a_key_without_a_limit_is_refused() -> None:
    with pytest.raises(ValueError, match=r"task _noop: a key needs a concurrency or a rate_limit \(a key without"):
        task(key=lambda order_id: order_id)(_noop)
    with pytest.raises(ValueError, match=r"workflow _flow: a key needs a concurrency \(a key without a limit"):
        workflow(version="1", key=lambda input: str(input))(_flow)


@pytest.mark.parametrize(("value", "kind"), [("3", "str"), (True, "bool"), (2.0, "float"), (None, "NoneType")])
def test_max_attempts_of_another_type_is_a_type_error_naming_it(value: Any, kind: str) -> None:
    with pytest.raises(TypeError, match=rf"^task _noop: max_attempts must be an int, not {kind}$"):
        task(max_attempts=value)(_noop)
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        task(max_attempts=0)(_noop)


def test_an_empty_name_is_refused_and_a_name_must_be_text() -> None:
    with pytest.raises(ValueError, match=r"task _noop: name is empty: give a name, or leave it out for the default"):
        task(name="")(_noop)
    with pytest.raises(ValueError, match=r"workflow _flow: name is empty: .* for the default _flow$"):
        workflow("", version="1")(_flow)
    with pytest.raises(TypeError, match=r"task _noop: name must be a str, not int"):
        task(name=5)(_noop)  # type: ignore[call-overload]  # the mistake under test
    with pytest.raises(TypeError, match=r"workflow _flow: name must be a str, not bytes"):
        workflow(b"flow", version="1")(_flow)  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(TypeError, match="version must be a non-empty string"):
        workflow(version="")(_flow)


def test_a_queue_must_be_a_name() -> None:
    # An empty queue was accepted: its calls went to a queue no dispatcher could wait on (BLPOP of no key).
    with pytest.raises(ValueError, match=r"^task _noop: the queue name is empty$"):
        task(queue="")(_noop)
    with pytest.raises(ValueError, match=r"^workflow _flow: the queue name is empty$"):
        workflow(version="1", queue="")(_flow)
    with pytest.raises(ValueError, match=r"task _noop: queue 'a\|b' may not contain"):
        task(queue="a|b")(_noop)


async def test_options_at_the_edge_of_what_is_allowed_still_run(client: Client, roles: InProcessRoles) -> None:
    tag = uuid.uuid4().hex[:8]
    app = types.ModuleType(f"edge_app_{tag}")

    async def once(order_id: str) -> str:
        return f"charged {order_id}"

    async def edge(ctx: Context, input: dict[str, str]) -> str:
        return await once_task(input["order"])

    once_task = task(name=f"edge.once.{tag}", max_attempts=1, rate_limit="100/s", key=lambda order_id: order_id)(once)
    edge_flow = workflow(f"edge_{tag}", version="1", concurrency=1, key=lambda input: input["order"])(edge)
    app.once, app.edge = once_task, edge_flow  # type: ignore[attr-defined]  # a module built at run time
    roles.signal_bus()
    roles.scheduler()
    roles.dispatcher(app)
    handle = await client.start(edge_flow, {"order": "o-1"}, workflow_id=f"edge-{tag}")
    assert await client.result(handle.workflow_id, timeout=10) == "charged o-1"
