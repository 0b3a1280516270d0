"""Request body validation as API Gateway does it, with the message it gives.

API Gateway checks a body against the route's model (JSON Schema draft 4) and, when the body
is refused, sets ``$context.error.validationErrorString``: every problem the validator found,
as ``[<message>, <message>, ...]``. The messages are the validator's own English sentences
("object has missing required properties (["DSN"])", "ECMA 262 regex "..." does not match input
string "..."", ...). ``body_errors`` gives the same string from ``jsonschema``'s errors, so a
gateway response that carries it reads offline as it does in AWS: it names the missing or
unknown field, or quotes the value a pattern refused.

The sentences follow the validator API Gateway uses for the keywords the template's models
use; any other keyword falls back to jsonschema's own sentence. The string is the raw text:
gateway_responses.py JSON-escapes it where a template puts it inside a JSON string.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

NOT_JSON = "[the request body is not a JSON document]"
EMPTY = "[the request body is empty]"

# JSON Schema's primitive type names, as the validator reports them.
_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _TYPES if isinstance(value, kind)), "unknown")


def _names(values: Any) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def _message(error: jsonschema.ValidationError) -> str:
    keyword, expected, instance = error.validator, error.validator_value, error.instance
    if keyword == "required":
        missing = [name for name in expected if name not in instance]
        return f"object has missing required properties ({_names(sorted(missing))})"
    if keyword == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        extra = sorted(name for name in instance if name not in known)
        return (
            f"object instance has properties which are not allowed by the schema: {_names(extra)}"
        )
    if keyword == "pattern":
        return (
            f"ECMA 262 regex {json.dumps(expected)} does not match input string "
            f"{json.dumps(instance)}"
        )
    if keyword == "type":
        allowed = expected if isinstance(expected, list) else [expected]
        return (
            f"instance type ({_type_name(instance)}) does not match any allowed primitive type "
            f"(allowed: {_names(allowed)})"
        )
    if keyword == "enum":
        return (
            f"instance value ({json.dumps(instance)}) not found in enum "
            f"(possible values: {_names(expected)})"
        )
    if keyword == "minLength":
        return (
            f"string {json.dumps(instance)} is too short (length: {len(instance)}, "
            f"required minimum: {expected})"
        )
    if keyword == "maxLength":
        return (
            f"string {json.dumps(instance)} is too long (length: {len(instance)}, "
            f"maximum allowed: {expected})"
        )
    if keyword == "oneOf":
        matched = sum(jsonschema.Draft4Validator(option).is_valid(instance) for option in expected)
        return (
            f"instance failed to match exactly one schema (matched {matched} out of "
            f"{len(expected)})"
        )
    if keyword == "anyOf":
        return f"instance failed to match at least one required schema among {len(expected)}"
    if keyword == "not":
        return "instance matched a schema which it should not have"
    return str(error.message)


def body_errors(validator: jsonschema.Draft4Validator, body: bytes) -> str | None:
    """``None`` if the body passes the model; otherwise the validation error string."""
    if not body:
        return EMPTY
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's limit
        return NOT_JSON
    try:
        errors = list(validator.iter_errors(document))
    except RecursionError:
        return NOT_JSON
    if not errors:
        return None
    return "[" + ", ".join(_message(error) for error in errors) + "]"
