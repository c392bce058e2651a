"""The decoder's bounds (output/bounds.py): pure, without the model."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.output.bounds import (
    DEFAULT_ITEM_MAX_LENGTH,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_LENGTH,
    MIN_MAX_LENGTH,
    bounded_schema,
)

from ..support.schemas import NOTES

NESTED = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "people": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name"],
            },
        },
        "summary": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "code": {"type": "string", "pattern": "^[A-Z]+$"},
        "short": {"type": "string", "maxLength": 5},
    },
}


def test_the_issue_schema_gets_finite_strings_and_keeps_its_own_bounds() -> None:
    bounded = bounded_schema(NOTES, max_tokens=512)
    topics = bounded["properties"]["topics"]
    assert topics["maxItems"] == 5
    assert topics["items"] == {
        "type": "string",
        "maxLength": DEFAULT_ITEM_MAX_LENGTH,
        "minLength": 1,
    }
    assert bounded["properties"]["sentiment"] == NOTES["properties"]["sentiment"]
    assert bounded["additionalProperties"] is False
    assert "maxLength" not in NOTES["properties"]["topics"]["items"]  # the input is untouched


def test_a_small_budget_shares_its_characters_among_the_strings() -> None:
    # 10 item strings share 96 tokens x 3 chars: 28 each.
    items = bounded_schema(NOTES, max_tokens=96)["properties"]["topics"]["items"]
    assert items["maxLength"] == 28
    tiny = bounded_schema(NOTES, max_tokens=8)["properties"]["topics"]["items"]
    assert tiny["maxLength"] == MIN_MAX_LENGTH


def test_nested_arrays_strings_and_branches() -> None:
    bounded = bounded_schema(NESTED, max_tokens=4096)
    people = bounded["properties"]["people"]
    assert people["maxItems"] == DEFAULT_MAX_ITEMS
    assert people["items"]["properties"]["name"]["maxLength"] > 0
    assert people["items"]["additionalProperties"] is False
    assert bounded["properties"]["title"]["maxLength"] == DEFAULT_MAX_LENGTH
    assert bounded["properties"]["summary"]["anyOf"][0]["maxLength"] == DEFAULT_MAX_LENGTH
    assert "maxLength" not in bounded["properties"]["code"]  # a pattern bounds it
    assert bounded["properties"]["short"]["maxLength"] == 5


def test_never_below_the_schemas_own_minimums() -> None:
    schema = {
        "type": "array",
        "minItems": 12,
        "items": {"type": "string", "minLength": 300},
    }
    bounded = bounded_schema(schema, max_tokens=16)
    assert bounded["maxItems"] == 12 and bounded["items"]["maxLength"] == 300


def test_scale_tightens_every_added_bound() -> None:
    loose = bounded_schema(NESTED, max_tokens=4096)
    tight = bounded_schema(NESTED, max_tokens=4096, scale=0.5)
    assert tight["properties"]["people"]["maxItems"] == DEFAULT_MAX_ITEMS // 2
    assert tight["properties"]["title"]["maxLength"] < loose["properties"]["title"]["maxLength"]
    with pytest.raises(ValueError):
        bounded_schema(NESTED, max_tokens=10, scale=0)


def test_an_open_object_without_listed_properties_stays_open() -> None:
    schema: dict[str, Any] = {"type": "object"}
    assert bounded_schema(schema, max_tokens=64) == schema
    closed = {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "string"}}
    assert bounded_schema(closed, max_tokens=64)["additionalProperties"]["maxLength"] > 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=12)
        | st.dictionaries(
            st.sampled_from(
                ["sentiment", "topics", "action_items", "title", "people", "name", "x"]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(
    value=json_values,
    schema=st.sampled_from([NOTES, NESTED]),
    max_tokens=st.integers(1, 2048),
    scale=st.sampled_from([1.0, 0.5, 0.25]),
)
def test_what_the_bounded_schema_accepts_the_users_schema_accepts(
    value: Any, schema: dict[str, Any], max_tokens: int, scale: float
) -> None:
    bounded = bounded_schema(schema, max_tokens=max_tokens, scale=scale)
    if jsonschema.Draft202012Validator(bounded).is_valid(value):
        assert jsonschema.Draft202012Validator(schema).is_valid(value)
