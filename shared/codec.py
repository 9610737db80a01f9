"""JSON encoding of payloads and error records.

Payloads are JSON, never pickles: what is read from Redis is data, never code. Typed values (pydantic
models, dataclasses, TypedDicts) are converted with pydantic on the way in and out, so a task may return a
dataclass and the workflow receives that dataclass back.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from pydantic import PydanticSchemaGenerationError, PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import from_json, to_json, to_jsonable_python

from bdurable.errors import InvalidInputError, PayloadTooLargeError

__all__ = [
    "annotation_mismatch",
    "decode",
    "dumps",
    "encode_payload",
    "from_json_value",
    "loads",
    "read_json",
    "same_json",
    "to_json_value",
]


# The standard library's encoder decides what pydantic-core's fast one may not: one for every payload (``json.dumps``
# with options builds a new encoder on each call).
_STRICT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# pydantic-core writes and reads JSON unless this is False: only the benchmark turns it off, to measure it.
ACCELERATED = True


def dumps(value: Any) -> str:
    """Compact JSON text of JSON data (dicts with str keys, lists, str, int, float, bool, None): every caller
    converts other values with :func:`to_json_value` first. (pydantic-core would also write some that are not,
    such as sets or bytes, where the standard library refused them.)

    Written by pydantic-core (Rust, already a dependency through pydantic), which makes a dispatcher ~9% faster
    on single-task workflows than the standard library (docs/performance.md). Where the two could differ in
    meaning, the standard library has the last word, as before: NaN and infinities, which JSON cannot hold, are
    refused (pydantic-core writes them as the constants ``NaN`` and ``Infinity``, which send the value to the
    standard library), and text it cannot encode (a lone surrogate) is written as before. Floats may be spelled
    differently (``1e-7`` for ``1e-07``): the same number.
    """
    if not ACCELERATED:
        return _STRICT.encode(value)
    try:
        text = to_json(value, inf_nan_mode="constants")
    except ValueError:
        return _STRICT.encode(value)
    if b"NaN" in text or b"Infinity" in text:  # maybe a float JSON cannot hold (or only a string saying so)
        return _STRICT.encode(value)
    return text.decode()


def loads(text: str | bytes) -> Any:
    """Parse JSON text: pydantic-core first (2-10x faster), the standard library for what it refuses (an escaped
    lone surrogate) and for the error message of text that is no JSON."""
    if not ACCELERATED:
        return json.loads(text)
    try:
        return from_json(text)
    except (ValueError, TypeError):  # TypeError: a str holding a lone surrogate, which json reads
        return json.loads(text)


def read_json(text: str | bytes) -> Any:
    """JSON text from outside (a CLI option or file, a console request) as a payload value, or ``ValueError``.

    The message completes a sentence whose subject the caller names (``f"--input {exc}"``): the text is not
    valid JSON (malformed, or ``NaN``/``Infinity``/``1e999``, which Python's json reads and JSON has no value
    for), is nested too deeply, or cannot be a payload.
    """
    try:
        value = json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise ValueError("is not valid JSON: not UTF-8") from None
    except RecursionError:
        raise ValueError("is nested too deeply to be a payload") from None
    except ValueError as exc:
        raise ValueError(f"is not valid JSON: {exc}") from None
    try:
        to_json_value(value)  # what a payload can hold (its nesting depth)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot be a payload: {exc}") from None
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # an escaped lone surrogate ("\ud800") reads as a str Redis cannot hold (UTF-8)
        raise ValueError("cannot be a payload: it holds text that is not valid Unicode (a lone surrogate)") from None
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of the range of a JSON number (a double)")
    return number


def same_json(first: str, second: str) -> bool:
    """Whether two JSON texts are the same value, written alike (texts written by different encoders, as by
    b-durable before and after it changed its own, may spell a float differently). Written again by one
    encoder, so that ``1``, ``1.0`` and ``true`` stay different, and so do two key orders."""
    if first == second:
        return True
    try:
        return dumps(loads(first)) == dumps(loads(second))
    except (ValueError, TypeError):
        return False


def to_json_value(value: Any) -> Any:
    """Turn a value (dataclass, pydantic model, datetime, UUID, ...) into plain JSON data."""
    try:
        return to_jsonable_python(value)
    except Exception as exc:
        raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable: {exc}") from None


def encode_payload(value: Any, *, what: str, max_bytes: int, json_ready: bool = False) -> str:
    """Encode a payload to JSON text, once, refusing it before anything is written when it is too large.

    ``json_ready``: the value is plain JSON data already (a validated input), so it is not converted again.
    """
    try:
        text = dumps(value if json_ready else to_json_value(value))
    except ValueError as exc:
        raise TypeError(f"{what} is not JSON-serialisable: {exc}") from None
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # Redis holds UTF-8: a lone surrogate cannot be stored (nor sent) as it is
        raise TypeError(f"{what} is not JSON-serialisable: it holds text that is not valid Unicode") from None
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"{what} is {size} bytes, over the limit of {max_bytes} bytes (BDURABLE_MAX_PAYLOAD)"
        )
    return text


def decode(text: str | bytes | None) -> Any:
    """Decode JSON text from Redis; ``None`` stays ``None``."""
    return None if text is None else loads(text)


@lru_cache(maxsize=512)
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def from_json_value(value: Any, annotation: Any, *, what: str, strict: bool = False) -> Any:
    """Convert plain JSON data into ``annotation`` (a no-op for ``Any`` or missing annotations).

    Raises ``InvalidInputError`` with pydantic's explanation when the data does not fit the type. ``strict``
    checks by JSON's rules, as the JSON Schema a start by name is checked against: ``"5"`` is no integer and
    ``true`` no number (pydantic's strict JSON mode, where a dict still makes a dataclass and an ISO string a
    ``datetime``); a start is checked so by workflow object and by name alike.
    """
    if annotation is None or annotation is Any:
        return value
    try:
        adapter = _adapter(annotation)
    except (PydanticUserError, PydanticSchemaGenerationError) as exc:
        raise TypeError(f"{what}: pydantic cannot handle the type {_type_name(annotation)}: {exc}") from None
    except TypeError:
        return value  # an unhashable annotation object: leave the value as JSON
    try:
        if not strict:
            return adapter.validate_python(value)
        try:
            data = dumps(value).encode()
        except UnicodeEncodeError:  # as encode_payload says it: Redis holds UTF-8
            raise TypeError(f"{what} is not JSON-serialisable: it holds text that is not valid Unicode") from None
        except ValueError as exc:  # NaN, infinities
            raise TypeError(f"{what} is not JSON-serialisable: {exc}") from None
        return adapter.validate_json(data, strict=True)
    except ValidationError as exc:
        raise InvalidInputError(f"{what} does not match {_type_name(annotation)}: {_short(exc)}") from None


def annotation_mismatch(value: Any, annotation: Any, *, what: str) -> str | None:
    """Why the JSON ``value`` does not fit ``annotation`` (the message of ``from_json_value``'s error), or
    ``None`` when it does. Checks what a task or workflow returned where it returned it, so that a wrong value
    fails that call, not the reader who converts it later."""
    try:
        from_json_value(value, annotation, what=what)
    except InvalidInputError as exc:
        return str(exc)
    except TypeError:  # a type pydantic cannot build a validator for: nothing to check against, as before
        return None
    return None


def json_schema(annotation: Any) -> dict[str, Any] | None:
    """The JSON Schema of an annotation, or ``None`` when it accepts anything."""
    if annotation is None or annotation is Any:
        return None
    try:
        return _adapter(annotation).json_schema()
    except Exception:
        return None


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)


def _short(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        location = ".".join(str(p) for p in error.get("loc", ())) or "input"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    more = exc.error_count() - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
