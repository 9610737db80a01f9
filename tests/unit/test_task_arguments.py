"""A task call's arguments as stored and as given back to the function: the fast path for plain positional calls
must give exactly what ``inspect.Signature.bind`` gives, and wrong calls must still fail as ``bind`` fails."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any

import pytest

from bdurable import task
from bdurable.codec import annotation_mismatch


@dataclass
class Order:
    sku: str
    quantity: int


@task
async def plain(a: int, b: str = "x") -> str:
    return f"{a}{b}"


@task
async def typed(order: Order, note: str) -> tuple[Order, str]:
    return order, note


@task
async def flexible(a: int, *rest: int, scale: int = 1, **extra: Any) -> int:
    return (a + sum(rest)) * scale


@task
async def keyword_only(a: int, *, b: int) -> int:
    return a + b


CALLS: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
    (plain, (1,), {}),
    (plain, (1, "y"), {}),
    (plain, (), {"a": 1}),
    (plain, (1,), {"b": "z"}),
    (flexible, (1, 2, 3), {}),
    (flexible, (1,), {"scale": 2, "other": 5}),
    (keyword_only, (1,), {"b": 2}),
]


@pytest.mark.parametrize(("definition", "args", "kwargs"), CALLS)
def test_stored_arguments_are_what_bind_gives(definition: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    bound = inspect.signature(definition.fn).bind(*args, **kwargs)
    assert definition.bind_arguments(args, kwargs) == {"args": list(bound.args), "kwargs": bound.kwargs}


@pytest.mark.parametrize(
    ("definition", "args", "kwargs"),
    [(plain, (), {}), (plain, (1, "y", 3), {}), (plain, (1,), {"c": 1}), (keyword_only, (1, 2), {})],
)
def test_wrong_calls_fail_like_bind(definition: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        definition.bind_arguments(args, kwargs)


def test_invoke_converts_json_back_to_the_annotated_types() -> None:
    stored = typed.bind_arguments((Order("a-1", 2), "gift"), {})
    as_json = {"args": [{"sku": "a-1", "quantity": 2}, "gift"], "kwargs": {}}
    assert stored["args"][1] == "gift"
    assert asyncio.run(typed.invoke(as_json)) == (Order("a-1", 2), "gift")
    assert asyncio.run(plain.invoke({"args": [7], "kwargs": {}})) == "7x"
    assert asyncio.run(flexible.invoke({"args": [1, 2], "kwargs": {"scale": 3}})) == 9
    with pytest.raises(TypeError):
        asyncio.run(plain.invoke({"args": [1, "y", 3], "kwargs": {}}))


def test_a_result_is_checked_against_its_annotation_unless_pydantic_cannot_read_the_type() -> None:
    class Opaque:  # no pydantic schema: nothing to check against (the result stays JSON, as it always did)
        pass

    assert annotation_mismatch("text", str, what="the result") is None
    assert annotation_mismatch(None, str, what="the result of task t") is not None
    assert annotation_mismatch({"a": 1}, Opaque, what="the result") is None
    assert annotation_mismatch(None, Any, what="the result") is None
