"""Previews that are always valid prefixes: generated schemas, instances and byte splits.

The oracle here (``could_extend``, ``closed_ok``) is written for the generated schema subset on
its own, not with the code under test: a partial is shown to a client that cannot tell which
parts are complete, so "valid prefix" means some valid object extends it (strings grow at their
end, arrays and objects gain members); once the text is whole, what is shown obeys the schema
except for its lower bounds (``required``), which only structured.done/error judge.
"""

from __future__ import annotations

import codecs
import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenwire.output import (
    CLOSED,
    HIDDEN,
    UNCHANGED,
    OpenTail,
    PartialJSON,
    ResolvedSchema,
    check_schema,
    valid_prefix,
)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Multi-byte characters (so byte splits fall inside them) and the characters JSON escapes.
_ALPHABET = st.sampled_from(list('abcxyz é日"\\\n'))
_WORDS = st.text(_ALPHABET, min_size=1, max_size=6)
_NAMES = st.text(st.sampled_from(list("abcdefk_")), min_size=1, max_size=5)

# -- generated schemas and their instances ----------------------------------------------------

_leaf_schemas = st.one_of(
    st.lists(_WORDS, min_size=1, max_size=4, unique=True).map(
        lambda members: {"type": "string", "enum": members}
    ),
    st.integers(0, 8).map(lambda n: {"type": "string", "maxLength": n}),
    st.just({"type": "string"}),
    st.tuples(st.integers(-50, 0), st.integers(0, 50)).map(
        lambda b: {"type": "integer", "minimum": b[0], "maximum": b[1]}
    ),
    st.just({"type": "number"}),
    st.just({"type": "boolean"}),
)


def _containers(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    arrays = st.tuples(children, st.integers(0, 4)).map(
        lambda t: {"type": "array", "items": t[0], "maxItems": t[1]}
    )
    return arrays | _objects(children)


def _objects(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        properties = draw(st.dictionaries(_NAMES, children, min_size=1, max_size=4))
        required = [k for k in properties if draw(st.booleans())]
        return {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": draw(st.booleans()),
        }

    return build()


schemas = _objects(st.recursive(_leaf_schemas, _containers, max_leaves=6))


def instances(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid instances of a generated schema."""
    kind = schema["type"]
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "string":
        return st.text(_ALPHABET, max_size=schema.get("maxLength", 10))
    if kind == "integer":
        return st.integers(schema["minimum"], schema["maximum"])
    if kind == "number":
        return st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(instances(schema["items"]), max_size=schema["maxItems"])
    properties = schema["properties"]
    optional = [k for k in properties if k not in schema["required"]]
    return st.fixed_dictionaries(
        {k: instances(properties[k]) for k in schema["required"]},
        optional={k: instances(properties[k]) for k in optional},
    )


@st.composite
def invalid_instances(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    """An instance broken in one place, in a way a prefix can show: a wrong type, an enum
    value outside the enum, a string past maxLength, items past maxItems, a forbidden key."""
    kind = schema["type"]
    breaks: list[str] = ["type"]
    if "enum" in schema:
        breaks.append("enum")
    elif kind == "string" and "maxLength" in schema:
        breaks.append("long")
    elif kind == "array":
        breaks.append("many")
        breaks.append("item")
    elif kind == "object":
        breaks.append("child")
        if not schema["additionalProperties"]:
            breaks.append("key")
    how = draw(st.sampled_from(breaks))
    if how == "type":
        return draw(st.sampled_from(_WRONG_TYPE[kind]))
    if how == "enum":
        outsider = draw(_WORDS.filter(lambda w: w not in schema["enum"]))
        return outsider
    if how == "long":
        return draw(st.text(_ALPHABET, min_size=schema["maxLength"] + 1, max_size=14))
    if how == "item" and schema["maxItems"] > 0:
        size = draw(st.integers(0, schema["maxItems"] - 1))
        return [
            *draw(items_exactly(schema["items"], size)),
            draw(invalid_instances(schema["items"])),
        ]
    if how in ("many", "item"):
        extra = draw(st.lists(instances(schema["items"]), min_size=1, max_size=2))
        return [*draw(items_exactly(schema["items"], schema["maxItems"])), *extra]
    value = draw(instances(schema))
    if how == "key":
        key = draw(_NAMES.filter(lambda k: k not in schema["properties"]))
        value[key] = draw(st.sampled_from([1, "x", True, None]))
        return value
    key = draw(st.sampled_from(sorted(schema["properties"])))
    value[key] = draw(invalid_instances(schema["properties"][key]))
    return value


def items_exactly(schema: dict[str, Any], n: int) -> st.SearchStrategy[list[Any]]:
    return st.lists(instances(schema), min_size=n, max_size=n)


_WRONG_TYPE: dict[str, list[Any]] = {
    "string": [7, True, None, [], {}],
    "integer": ["7", True, None, 1.5, []],
    "number": ["7", False, None, {}],
    "boolean": [0, "yes", None],
    "array": [{}, "x", 3],
    "object": [[], "x", 3, None],
}

# -- the oracle -------------------------------------------------------------------------------


def could_extend(schema: dict[str, Any], value: Any) -> bool:
    """Some value valid under ``schema`` extends ``value`` (every part may still be open)."""
    return _conforms(schema, value, closed=False)


def closed_ok(schema: dict[str, Any], value: Any) -> bool:
    """``value``, taken as complete, obeys ``schema`` except for missing required keys."""
    return _conforms(schema, value, closed=True)


def _conforms(schema: dict[str, Any], value: Any, *, closed: bool) -> bool:
    kind = schema["type"]
    if kind == "string":
        if not isinstance(value, str):
            return False
        if "enum" in schema:
            members = schema["enum"]
            return value in members if closed else any(m.startswith(value) for m in members)
        return len(value) <= schema.get("maxLength", len(value))
    if kind == "integer":
        return type(value) is int and schema["minimum"] <= value <= schema["maximum"]
    if kind == "number":
        return type(value) in (int, float)
    if kind == "boolean":
        return type(value) is bool
    if kind == "array":
        return (
            isinstance(value, list)
            and len(value) <= schema["maxItems"]
            and all(_conforms(schema["items"], v, closed=closed) for v in value)
        )
    if not isinstance(value, dict):
        return False
    properties = schema["properties"]
    if not schema["additionalProperties"] and not set(value) <= set(properties):
        return False
    return all(
        _conforms(properties[k], v, closed=closed) for k, v in value.items() if k in properties
    )


def is_prefix(partial: Any, whole: Any) -> bool:
    """``partial`` is what ``whole`` looked like part way (strings cut at their end, members
    missing), as :class:`PartialJSON` shows it."""
    if isinstance(partial, str) and isinstance(whole, str):
        return whole.startswith(partial)
    if isinstance(partial, list) and isinstance(whole, list):
        return len(partial) <= len(whole) and all(map(is_prefix, partial, whole))
    if isinstance(partial, dict) and isinstance(whole, dict):
        return all(k in whole and is_prefix(v, whole[k]) for k, v in partial.items())
    return type(partial) is type(whole) and partial == whole


# -- feeding ----------------------------------------------------------------------------------


@st.composite
def byte_splits(draw: st.DrawFn, value: Any) -> list[str]:
    """The value's JSON as a provider streams it: bytes cut anywhere, decoded incrementally."""
    indent = draw(st.sampled_from([None, 1]))
    raw = ("```json\n" + json.dumps(value, ensure_ascii=False, indent=indent) + "\n```").encode()
    points = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=16)))
    decoder = codecs.getincrementaldecoder("utf-8")()
    return [decoder.decode(raw[a:b]) for a, b in itertools.pairwise([0, *points, len(raw)])]


def previews(schema: ResolvedSchema | None, chunks: list[str]) -> tuple[list[Any], PartialJSON]:
    parser = PartialJSON(schema)
    return [v for v in (parser.feed(c) for c in chunks) if v is not UNCHANGED], parser


@st.composite
def schema_and_instance(draw: st.DrawFn, valid: bool) -> tuple[dict[str, Any], Any]:
    schema = draw(schemas)
    value = draw(instances(schema) if valid else invalid_instances(schema))
    return schema, value


@PROPERTY
@given(case=schema_and_instance(valid=True), data=st.data())
def test_a_valid_object_streams_as_it_would_without_a_schema(
    case: tuple[dict[str, Any], Any], data: st.DataObject
) -> None:
    schema, value = case
    chunks = data.draw(byte_splits(value))
    shown, parser = previews(check_schema(schema), chunks)
    # Nothing of a valid object is held back: the same previews as without the schema...
    assert shown == previews(None, chunks)[0]
    # ...each one a valid prefix of the final value, which is the whole instance.
    assert all(could_extend(schema, p) and is_prefix(p, value) for p in shown)
    assert all(a != b for a, b in itertools.pairwise(shown))
    assert parser.complete and shown[-1] == value


@PROPERTY
@given(case=schema_and_instance(valid=False), data=st.data())
def test_no_preview_shows_what_makes_an_object_invalid(
    case: tuple[dict[str, Any], Any], data: st.DataObject
) -> None:
    schema, value = case
    if not isinstance(value, dict):
        return  # a top-level value of the wrong type: covered below, nothing shown at all
    shown, parser = previews(check_schema(schema), data.draw(byte_splits(value)))
    for preview in shown:
        assert could_extend(schema, preview), preview
        assert is_prefix(preview, value), preview
    assert parser.complete
    if shown:
        # Once whole, the broken part is gone (or cut to its bound), not just unfinished.
        assert closed_ok(schema, shown[-1]), shown[-1]
    assert all(a != b for a, b in itertools.pairwise(shown))


@pytest.mark.parametrize("value", [[], ["x"], [{"a": 1}]])
def test_a_top_level_value_of_the_wrong_type_shows_nothing(value: Any) -> None:
    schema = check_schema({"type": "object"})
    assert previews(schema, [json.dumps(value)])[0] == []


# -- the rules, one by one --------------------------------------------------------------------

MOOD = check_schema(
    {
        "type": "object",
        "properties": {
            "sentiment": {"enum": ["positive", "negative", "neutral"]},
            "topics": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "summary": {"type": "string", "maxLength": 5},
            "urgent": {"type": "boolean"},
        },
        "additionalProperties": False,
    }
)


def stream(schema: ResolvedSchema, text: str) -> list[Any]:
    """Every preview, one character at a time."""
    return previews(schema, list(text))[0]


def test_an_enum_shows_only_prefixes_of_its_values_and_an_outsider_never_shows() -> None:
    shown = stream(MOOD, '{"sentiment": "posh", "urgent": true}')
    assert [p.get("sentiment") for p in shown if "sentiment" in p] == ["", "p", "po", "pos"]
    assert shown[-1] == {"urgent": True}
    # A complete value that is only a prefix of an allowed one goes too.
    assert stream(MOOD, '{"sentiment": "pos"}')[-1] == {}


def test_items_past_max_items_are_held_back() -> None:
    # The issue's case: a 4-item array under maxItems 3.
    shown = stream(MOOD, '{"topics": ["a", "b", "c", "d"]}')
    assert max(len(p.get("topics", [])) for p in shown) == 3
    assert shown[-1] == {"topics": ["a", "b", "c"]}


def test_a_string_is_cut_at_max_length_and_stays_cut() -> None:
    shown = stream(MOOD, '{"summary": "abcdefgh"}')
    assert max(len(p.get("summary", "")) for p in shown) == 5
    assert shown[-1] == {"summary": "abcde"}


def test_forbidden_keys_and_wrong_types_never_show() -> None:
    shown = stream(MOOD, '{"extra": "x", "urgent": "yes", "topics": [1, "a"]}')
    assert all("extra" not in p and "urgent" not in p for p in shown)
    # An item of the wrong type cuts the array there: later items would shift index.
    assert all(p.get("topics", []) == [] for p in shown)


def test_a_key_being_written_is_not_its_value() -> None:
    # '{"sentiment": "pos", "top' ends inside a key: "pos" is complete, so it cannot show.
    assert valid_prefix(MOOD, {"sentiment": "pos"}, OpenTail(1, string=True)) == {
        "sentiment": "pos"
    }
    parser = PartialJSON(MOOD)
    assert parser.feed('{"sentiment": "pos", "top') == {}


def test_refs_any_of_and_numbers() -> None:
    schema = check_schema(
        {
            "$defs": {"Level": {"type": "integer", "minimum": 1, "maximum": 3}},
            "type": "object",
            "properties": {
                "level": {"$ref": "#/$defs/Level"},
                "note": {"anyOf": [{"type": "string", "maxLength": 2}, {"type": "null"}]},
                "tags": {"type": "array", "prefixItems": [{"const": "first"}], "items": True},
            },
        }
    )
    assert valid_prefix(schema, {"level": 2, "note": None}) == {"level": 2, "note": None}
    assert valid_prefix(schema, {"level": 9, "note": "abc"}) == {"note": "ab"}
    assert valid_prefix(schema, {"tags": ["fir"]}, OpenTail(2, string=True)) == {"tags": ["fir"]}
    assert valid_prefix(schema, {"tags": ["fir"]}, CLOSED) == {"tags": []}
    assert valid_prefix(schema, {"tags": ["first", 1]}) == {"tags": ["first", 1]}
    assert valid_prefix(check_schema({"type": "object"}), []) is HIDDEN


def test_a_pydantic_model_schema_with_nested_refs() -> None:
    from typing import Literal

    from pydantic import BaseModel, Field

    class Item(BaseModel):
        kind: Literal["bug", "idea"]
        title: str = Field(max_length=4)

    class Report(BaseModel):
        items: list[Item] = Field(max_length=2)

    schema = check_schema(Report.model_json_schema())
    text = '{"items": [{"kind": "bux", "title": "a"}, {"kind": "idea", "title": "abcdef"}, {}]}'
    shown = stream(schema, text)
    assert all(could_be_report(p) for p in shown)
    assert shown[-1] == {"items": [{"title": "a"}, {"kind": "idea", "title": "abcd"}]}


def could_be_report(preview: dict[str, Any]) -> bool:
    items = preview.get("items", [])
    return len(items) <= 2 and all(
        any(k.startswith(i.get("kind", "")) for k in ("bug", "idea"))
        and len(i.get("title", "")) <= 4
        for i in items
    )
