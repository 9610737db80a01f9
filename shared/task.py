"""``@task``: a function whose calls inside a workflow are durable, retried and dead-lettered."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

import anyio
import anyio.to_thread

from bdurable.codec import from_json_value
from bdurable.current import current_run
from bdurable.durations import parse_duration
from bdurable.errors import InvalidInputError
from bdurable.limits import Limit, parse_rate
from bdurable.naming import check_queue, given_name

__all__ = ["ArgumentMismatch", "Task", "task"]

P = ParamSpec("P")
R = TypeVar("R")

OnExhausted = Literal["raise", "park"]


class Task(Generic[P, R]):
    """A registered task. Await a call inside a workflow to run it durably; outside, it runs directly."""

    def __init__(
        self,
        fn: Callable[P, Awaitable[R]] | Callable[P, R],
        *,
        name: str | None,
        max_attempts: int,
        backoff: str | float,
        timeout: str | float | None,
        on_exhausted: OnExhausted,
        queue: str,
        concurrency: int | None = None,
        rate_limit: str | None = None,
        key: Callable[..., Any] | None = None,
    ) -> None:
        attempts: object = max_attempts  # callers without a type checker may pass anything
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"task {fn.__qualname__}: max_attempts must be an int, not {type(attempts).__name__}")
        if max_attempts < 1:
            raise ValueError(f"task {fn.__qualname__}: max_attempts must be >= 1")
        if on_exhausted not in ("raise", "park"):
            raise ValueError(f"task {fn.__qualname__}: on_exhausted must be 'raise' or 'park'")
        self.fn = fn
        self.name = given_name(name, f"{fn.__module__}.{fn.__qualname__}", f"task {fn.__qualname__}")
        self.max_attempts = max_attempts
        self.backoff = parse_duration(backoff)
        self.timeout = None if timeout is None else parse_duration(timeout)
        self.on_exhausted: OnExhausted = on_exhausted
        self.queue = check_queue(queue, f"task {fn.__qualname__}")
        try:
            self.limit = Limit(concurrency, None if rate_limit is None else parse_rate(rate_limit), key)
        except ValueError as exc:
            raise ValueError(f"task {fn.__qualname__}: {exc}") from None
        if key is not None and not self.limit.active:
            raise ValueError(
                f"task {fn.__qualname__}: a key needs a concurrency or a rate_limit "
                "(a key without a limit does nothing)"
            )
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self._positional = _positional_names(self.signature)
        self._required = sum(1 for p in self.signature.parameters.values() if p.default is inspect.Parameter.empty)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    @functools.cached_property
    def _hints(self) -> dict[str, Any]:
        from typing import get_type_hints

        try:
            return get_type_hints(self.fn)
        except Exception:
            return {}

    @property
    def return_annotation(self) -> Any:
        return self._hints.get("return")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        run = current_run()
        if run is None:
            return self._run_local(*args, **kwargs)
        return run.call_task(self, args, kwargs)

    async def _run_local(self, *args: Any, **kwargs: Any) -> R:
        return await self._call(args, kwargs, None)

    async def _call(self, args: Any, kwargs: Any, threads: anyio.CapacityLimiter | None) -> R:
        """Run the function: a coroutine function on the loop, a plain one in a worker thread (``threads``
        limits how many at once; the dispatcher sizes it from its concurrency)."""
        if self.is_async:
            return await self.fn(*args, **kwargs)  # type: ignore[no-any-return, misc]
        call = functools.partial(self.fn, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, limiter=threads)  # type: ignore[arg-type]

    def bind_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """A call's arguments as they are stored, ``{"args", "kwargs"}`` (a wrong call raises ``TypeError`` in
        the workflow); the payload encoder turns the values into JSON, once."""
        if self._plain_call(args, kwargs):
            return {"args": list(args), "kwargs": {}}  # what `bind` gives, without its cost on the hot path
        bound = self.signature.bind(*args, **kwargs)
        return {"args": list(bound.args), "kwargs": bound.kwargs}

    def _plain_call(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> bool:
        """Positional arguments only, to a signature of plain parameters, as many as it takes: ``bind`` would
        accept them as they are."""
        names = self._positional
        return names is not None and not kwargs and self._required <= len(args) <= len(names)

    async def invoke(self, arguments: dict[str, Any], *, threads: anyio.CapacityLimiter | None = None) -> Any:
        """Run the task with JSON arguments converted back to the parameters' annotated types (arguments that do
        not fit raise ``ArgumentMismatch``: the function never runs)."""
        try:
            args, kwargs = self._convert(arguments.get("args", []), arguments.get("kwargs", {}))
        except InvalidInputError as exc:
            raise ArgumentMismatch(str(exc)) from None
        return await self._call(args, kwargs, threads)

    def _convert(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self._plain_call(args, kwargs):
            names = self._positional or ()
            converted = [
                from_json_value(value, self._hints.get(name), what=f"argument {name!r} of {self.name}")
                for name, value in zip(names, args, strict=False)
            ]
            return tuple(converted), {}
        bound = self.signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            annotation, what = self._hints.get(name), f"argument {name!r} of {self.name}"
            kind = self.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:  # `*rest: int` annotates each element
                bound.arguments[name] = tuple(from_json_value(v, annotation, what=what) for v in value)
            elif kind is inspect.Parameter.VAR_KEYWORD:  # `**extra: int` annotates each value
                bound.arguments[name] = {k: from_json_value(v, annotation, what=what) for k, v in value.items()}
            else:
                bound.arguments[name] = from_json_value(value, annotation, what=what)
        return bound.args, bound.kwargs


class ArgumentMismatch(TypeError):
    """A call's arguments do not fit the task's parameter annotations: the same on every attempt, so the call
    fails at once (a ``TypeError`` in its error record) rather than being retried."""


def _positional_names(signature: inspect.Signature) -> tuple[str, ...] | None:
    """The parameters' names when every one can be given by position (no ``*args``, ``**kwargs`` or keyword-only
    parameter): calls with positional arguments alone then need no ``bind``. ``None`` otherwise."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = signature.parameters.values()
    return tuple(p.name for p in parameters) if all(p.kind in kinds for p in parameters) else None


class TaskDecorator(Protocol):
    """What ``@task(...)`` with options returns: a decorator that keeps the function's signature."""

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    max_attempts: int = 3,
    backoff: str | float = "1s",
    timeout: str | float | None = None,
    on_exhausted: OnExhausted = "raise",
    queue: str = "default",
    concurrency: int | None = None,
    rate_limit: str | None = None,
    key: Callable[..., Any] | None = None,
) -> TaskDecorator: ...


def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    max_attempts: int = 3,
    backoff: str | float = "1s",
    timeout: str | float | None = None,
    on_exhausted: OnExhausted = "raise",
    queue: str = "default",
    concurrency: int | None = None,
    rate_limit: str | None = None,
    key: Callable[..., Any] | None = None,
) -> Any:
    """Declare a task, bare (``@task``) or with options (``@task(name=..., max_attempts=...)``).

    Attempts are retried with exponential backoff and jitter starting at ``backoff`` and capped at five
    minutes; ``timeout`` bounds each attempt. After the last attempt the call goes to the dead-letter
    queue and the workflow receives ``TaskFailedError`` (``on_exhausted="raise"``) or waits for an operator
    (``on_exhausted="park"``).

    Flow control, fleet-wide: ``concurrency`` attempts at once, ``rate_limit`` attempts per window ("100/m",
    a sliding window), both per ``key`` (a function of the call's arguments returning a string) when given.
    A call held back waits, in its place in line; it never fails for it.
    """
    if isinstance(fn, str):
        raise TypeError("task() takes its name as a keyword: @task(name='...')")

    def decorate(function: Callable[..., Any]) -> Task[Any, Any]:
        return Task(
            function,
            name=name,
            max_attempts=max_attempts,
            backoff=backoff,
            timeout=timeout,
            on_exhausted=on_exhausted,
            queue=queue,
            concurrency=concurrency,
            rate_limit=rate_limit,
            key=key,
        )

    return decorate if fn is None else decorate(fn)
