"""Bounds for a constrained decoder: a JSON Schema as users write it, made finite.

A schema as users write it leaves strings and arrays unbounded. A grammar-constrained small
model then writes one string (or one array, repeating its item) until ``max_tokens`` cuts the
JSON, which can never validate, and a re-ask does the same. :func:`bounded_schema` gives the
decoder a schema whose every value ends within the budget; the user's schema is unchanged and
still validates the result. The rule (README "Structured output", docs/turns.md):

- an array without ``maxItems`` gets ``maxItems`` :data:`DEFAULT_MAX_ITEMS` (8);
- a string without ``maxLength`` (and without ``enum``, ``const`` or ``pattern``, which bound it
  already or cannot take one) gets ``maxLength``: the call's character budget
  (``max_tokens`` times :data:`CHARS_PER_TOKEN`, less the bounded strings' own lengths) shared
  evenly by the unbounded strings, each counted as many times as the arrays around it can
  repeat it; at most :data:`DEFAULT_MAX_LENGTH` (200), or :data:`DEFAULT_ITEM_MAX_LENGTH` (60)
  for an array's item (a topic, a tag, a name: a label, not a paragraph), at least
  :data:`MIN_MAX_LENGTH` (16);
- an array's string item without ``minLength`` gets ``minLength`` 1 (an empty label is the
  small model's filler);
- an object that lists its ``properties`` and leaves ``additionalProperties`` open is closed;
- never below the schema's own ``minItems`` / ``minLength``.

Each bound only removes values, so whatever the bounded schema accepts the user's accepts too.
``scale`` (0 < scale ≤ 1) tightens every added bound, for a re-ask after an attempt was cut.
Pure: dicts in, a new dict out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_ITEM_MAX_LENGTH",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_LENGTH",
    "MIN_MAX_LENGTH",
    "bounded_schema",
]

DEFAULT_MAX_ITEMS = 8
"""``maxItems`` of an array that has none."""
DEFAULT_MAX_LENGTH = 200
"""The longest ``maxLength`` given to a string that has none."""
DEFAULT_ITEM_MAX_LENGTH = 60
"""The longest ``maxLength`` given to an array's string item that has none."""
MIN_MAX_LENGTH = 16
"""The shortest ``maxLength`` given to a string that has none, however small the budget."""
CHARS_PER_TOKEN = 3
"""Characters a token is counted for: below English's ~4 on Gemma's tokenizer, for margin
(JSON punctuation and keys take tokens too)."""

_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


def bounded_schema(
    schema: Mapping[str, Any], *, max_tokens: int, scale: float = 1.0
) -> dict[str, Any]:
    """``schema`` with the bounds above added, for a decoder allowed ``max_tokens`` tokens."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], not {scale}")
    with_items = _bound_arrays(schema, scale)
    slots, fixed_chars = _string_slots(with_items, 1)
    budget = max(max_tokens * CHARS_PER_TOKEN * scale - fixed_chars, 0)
    share = int(budget // slots) if slots else DEFAULT_MAX_LENGTH
    length = max(MIN_MAX_LENGTH, min(share, int(DEFAULT_MAX_LENGTH * scale)))
    item_length = max(MIN_MAX_LENGTH, min(length, int(DEFAULT_ITEM_MAX_LENGTH * scale)))
    bounded = _bound_strings(with_items, length, item_length)
    assert isinstance(bounded, dict)
    return bounded


def _is(schema: Mapping[str, Any], kind: str) -> bool:
    declared = schema.get("type")
    return declared == kind or (isinstance(declared, list) and kind in declared)


def _map_subschemas(schema: Mapping[str, Any], fn: Any) -> dict[str, Any]:
    """A copy of ``schema`` with ``fn`` applied to each direct subschema."""
    out = dict(schema)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            out[key] = [fn(s) if isinstance(s, Mapping) else s for s in schema[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(schema.get(key), Mapping):
            out[key] = {k: fn(s) if isinstance(s, Mapping) else s for k, s in schema[key].items()}
    for key in ("items", "additionalProperties", "not", "if", "then", "else"):
        if isinstance(schema.get(key), Mapping):
            out[key] = fn(schema[key])
    return out


def _bound_arrays(schema: Mapping[str, Any], scale: float) -> dict[str, Any]:
    out = _map_subschemas(schema, lambda s: _bound_arrays(s, scale))
    if _is(schema, "array") and "maxItems" not in schema:
        floor = int(schema.get("minItems", 0))
        out["maxItems"] = max(floor, math.ceil(DEFAULT_MAX_ITEMS * scale))
    properties = schema.get("properties")
    if (
        isinstance(properties, Mapping)
        and properties
        and schema.get("additionalProperties", True) is True
        and "patternProperties" not in schema
        and set(schema.get("required", ())) <= set(properties)
    ):
        out["additionalProperties"] = False
    return out


def _unbounded_string(schema: Mapping[str, Any]) -> bool:
    return _is(schema, "string") and not {"maxLength", "enum", "const", "pattern"} & set(schema)


def _string_slots(schema: Mapping[str, Any], repeat: int) -> tuple[int, int]:
    """How many unbounded strings ``schema`` can hold (each counted ``repeat`` times, and as
    often as the arrays around it repeat it), and how many characters its bounded ones can."""
    slots = fixed = 0
    if _unbounded_string(schema):
        slots += repeat
    elif _is(schema, "string") and isinstance(schema.get("maxLength"), int):
        fixed += repeat * schema["maxLength"]
    inner = repeat
    if _is(schema, "array") and isinstance(schema.get("maxItems"), int):
        inner = repeat * max(schema["maxItems"], 1)

    def visit(sub: Mapping[str, Any]) -> Mapping[str, Any]:
        nonlocal slots, fixed
        under = inner if sub is schema.get("items") else repeat
        more_slots, more_fixed = _string_slots(sub, under)
        slots, fixed = slots + more_slots, fixed + more_fixed
        return sub

    _map_subschemas(schema, visit)
    return slots, fixed


def _bound_strings(
    schema: Mapping[str, Any], length: int, item_length: int, *, item: bool = False
) -> dict[str, Any]:
    def visit(sub: Mapping[str, Any]) -> dict[str, Any]:
        is_item = sub is schema.get("items") or sub in schema.get("prefixItems", ())
        return _bound_strings(sub, length, item_length, item=is_item)

    out = _map_subschemas(schema, visit)
    if _unbounded_string(schema):
        floor = int(schema.get("minLength", 0))
        out["maxLength"] = max(item_length if item else length, floor)
        if item and "minLength" not in schema:
            out["minLength"] = 1
    return out
