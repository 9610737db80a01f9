"""Checking a start by name against the JSON Schema its workflow's dispatchers registered."""

from __future__ import annotations

from typing import Any

import jsonschema
import referencing
import referencing.exceptions

from bdurable.errors import InvalidInputError, RegistrationError

__all__ = ["validate_against_schema"]


def validate_against_schema(value: Any, schema: dict[str, Any], what: str) -> None:
    """Validate a start by name against the registered JSON Schema, fetching nothing.

    The schema is data read from Redis: an empty ``referencing.Registry`` keeps a remote ``$ref`` from
    turning validation into an HTTP request (local ``#/$defs`` references still resolve).
    """
    try:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class(schema, registry=referencing.Registry()).validate(value)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "input"
        message = exc.message
        if len(message) > 300:  # the message quotes the value: never echo a huge payload back
            message = f"the value (too long to show) fails {exc.validator!r}: {exc.validator_value!r}"[:300]
        raise InvalidInputError(f"input of {what} is invalid at {where}: {message}") from None
    except (jsonschema.SchemaError, referencing.exceptions.Unresolvable) as exc:
        raise RegistrationError(f"the registered input schema of {what} is unusable: {exc}") from None
