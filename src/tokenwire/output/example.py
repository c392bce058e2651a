"""Example values built from a JSON Schema, for the few-shot lines of an extraction prompt.

A small base model copies the form of what it is shown better than it reads a schema: an
example object with the schema's own enum values and field names teaches it the shape of the
answer. :func:`example_values` varies the examples (the second picks each enum's second value,
and so on) so that no one value is suggested more than the others, and only returns examples
that validate against the schema: a wrong example would teach a wrong answer.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

_STRING = "text"
"""The example of a free string: neutral, so the model does not copy a made-up value."""


def example_values(schema: dict[str, Any], count: int) -> list[Any]:
    """Up to ``count`` distinct example values of ``schema``, each valid against it; fewer
    (maybe none) when the schema has fewer distinct examples or none can be built (a
    ``pattern``, a ``$ref``, a ``not``)."""
    validator = Draft202012Validator(schema)
    examples: list[Any] = []
    for variant in range(count):
        try:
            value = _example(schema, variant)
        except _NoExample:
            break
        if value not in examples and validator.is_valid(value):
            examples.append(value)
    return examples


class _NoExample(Exception):
    """The schema uses a keyword this builder does not satisfy."""


def _example(schema: Any, variant: int) -> Any:
    if schema is True or schema == {}:
        return _STRING
    if not isinstance(schema, dict) or any(k in schema for k in ("$ref", "not", "pattern")):
        raise _NoExample
    given = schema.get("examples")
    if isinstance(given, list) and given:
        return given[variant % len(given)]
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        values = schema["enum"]
        return values[variant % len(values)]
    for keyword in ("anyOf", "oneOf"):
        if isinstance(schema.get(keyword), list) and schema[keyword]:
            return _example(schema[keyword][0], variant)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        return {name: _example(sub, variant) for name, sub in properties.items()}
    if kind == "array":
        length = max(1, int(schema.get("minItems", 0)))
        length = min(length, int(schema.get("maxItems", length)))
        return [_example(schema.get("items", {}), variant + i) for i in range(length)]
    if kind == "string":
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        text = _STRING.ljust(low, "x")
        return text if high is None else text[: int(high)]
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return variant % 2 == 0
    if kind == "null":
        return None
    return _STRING


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    value: int | float = 0 if low is None else low
    if "exclusiveMinimum" in schema and "minimum" not in schema:
        value = value + 1
    high = schema.get("maximum")
    if high is not None and value > high:
        value = high
    return int(value) if integer else value
