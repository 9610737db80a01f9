"""``@workflow``: an ``async def f(ctx, input)`` that runs durably, step by step, by replay."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, TypeVar, get_type_hints

from bdurable.codec import from_json_value, json_schema, to_json_value
from bdurable.limits import Limit
from bdurable.naming import check_queue, given_name

if TYPE_CHECKING:
    from bdurable.replay.context import Context

__all__ = ["Workflow", "workflow"]

I = TypeVar("I")  # noqa: E741 - the conventional name for a workflow's input type
O = TypeVar("O")  # noqa: E741 - and for its output type


class Workflow(Generic[I, O]):
    """A workflow definition: its name, strict version, queue and code."""

    def __init__(
        self,
        fn: Callable[[Context, I], Awaitable[O]],
        *,
        name: str | None,
        version: str,
        queue: str,
        concurrency: int | None = None,
        key: Callable[[Any], str] | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"workflow {fn.__qualname__} must be an `async def f(ctx, input)`")
        parameters = list(inspect.signature(fn).parameters.values())
        if len(parameters) != 2 or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
            raise TypeError(f"workflow {fn.__qualname__} must take exactly two arguments: (ctx, input)")
        if not _is_text(version):
            raise TypeError(f"workflow {fn.__qualname__}: version must be a non-empty string")
        self.fn = fn
        self.name = given_name(name, fn.__name__, f"workflow {fn.__qualname__}")
        self.version = version
        self.queue = queue
        try:
            self.limit = Limit(concurrency, None, key)
        except ValueError as exc:
            raise ValueError(f"workflow {fn.__qualname__}: {exc}") from None
        if key is not None and concurrency is None:
            raise ValueError(
                f"workflow {fn.__qualname__}: a key needs a concurrency (a key without a limit does nothing)"
            )
        self._input_parameter = parameters[1].name
        check_queue(queue, f"workflow {fn.__qualname__}")
        for text, what in ((self.name, "name"), (version, "version")):
            if any(c in text for c in "\t\n|@{}"):
                raise ValueError(
                    f"workflow {fn.__qualname__}: {what} {text!r} may not contain tabs, newlines, |, @, {{ or }}"
                )

    def __repr__(self) -> str:
        return f"<Workflow {self.name}@{self.version}>"

    @cached_property
    def _hints(self) -> dict[str, Any]:
        try:
            return get_type_hints(self.fn)
        except Exception:
            return {}

    @property
    def input_annotation(self) -> Any:
        return self._hints.get(self._input_parameter)

    @property
    def output_annotation(self) -> Any:
        return self._hints.get("return")

    def validate_input(self, value: Any, *, strict: bool = True) -> Any:
        """Validate and convert an input (raises ``InvalidInputError``); returns its JSON form.

        ``strict``: by JSON's rules, as a start by name is checked against the registered JSON Schema (a start
        from outside a workflow). Inside a workflow (a child, continue-as-new) the check is pydantic's lenient
        conversion, as it has always been there: it runs again at every replay, and a recorded call must
        replay as it ran."""
        data = to_json_value(value)
        if self.input_annotation is None or self.input_annotation is Any:
            return data  # nothing to validate: converted once
        checked = from_json_value(data, self.input_annotation, what=f"input of {self.name}", strict=strict)
        return to_json_value(checked)

    def convert_input(self, value: Any) -> Any:
        """JSON input to the annotated input type, as the workflow function receives it."""
        return from_json_value(value, self.input_annotation, what=f"input of {self.name}")

    def convert_output(self, value: Any) -> Any:
        return from_json_value(value, self.output_annotation, what=f"output of {self.name}")

    @cached_property
    def input_schema(self) -> dict[str, Any] | None:
        """JSON Schema of the input, registered so that clients starting by name can validate."""
        return json_schema(self.input_annotation)


def _is_text(value: object) -> bool:
    """Runtime check for callers without a type checker."""
    return isinstance(value, str) and bool(value)


def workflow(
    name: str | None = None,
    *,
    version: str,
    queue: str = "default",
    concurrency: int | None = None,
    key: Callable[[Any], str] | None = None,
) -> Callable[[Callable[[Context, I], Awaitable[O]]], Workflow[I, O]]:
    """Declare a workflow: ``@workflow(version="1.0")``. The version is required and strict.

    ``concurrency``: at most that many runs in progress at once, fleet-wide (per ``key``, a function of the
    input returning a string); the others wait as ``QUEUED``, first in first out within a priority.
    """
    if callable(name):
        raise TypeError("@workflow needs a version: write @workflow(version='1.0')")

    def decorate(fn: Callable[[Context, I], Awaitable[O]]) -> Workflow[I, O]:
        return Workflow(fn, name=name, version=version, queue=queue, concurrency=concurrency, key=key)

    return decorate
