"""Declarative conditions: pure functions of a record, tested without an event loop."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from tokenwire.router import (
    MISSING,
    AllOf,
    Always,
    AnyCondition,
    Condition,
    FieldAnyOf,
    FieldEquals,
    FieldExists,
    Not,
    TextLength,
    resolve,
)

RECORD: dict[str, Any] = {
    "stream_id": "s1",
    "answer": "Hello there",
    "partial": False,
    "attempts": 1,
    "model": None,
    "reason": "stop",
    "sources": ["a", "b"],
    "structured": {"status": "valid", "data": {"sentiment": "negative", "score": 0.2}},
    "metadata": {"tenant": "acme", "tier": 1},
}

conditions = TypeAdapter(Condition)


def when(toml_value: str) -> Any:
    """Parse ``when = <toml_value>`` the way the config file would."""
    return conditions.validate_python(tomllib.loads(f"when = {toml_value}")["when"])


def test_resolve_dotted_paths() -> None:
    assert resolve(RECORD, "structured.data.sentiment") == "negative"
    assert resolve(RECORD, "metadata.tenant") == "acme"
    assert resolve(RECORD, "sources.1") == "b"
    assert resolve(RECORD, "model") is None
    for missing in (
        "nope",
        "structured.data.nope",
        "sources.2",
        "sources.x",
        "answer.0",
        "model.x",
    ):
        assert resolve(RECORD, missing) is MISSING, missing


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('{ field = "metadata.tenant", exists = true }', True),
        ('{ field = "metadata.region", exists = true }', False),
        ('{ field = "metadata.region", exists = false }', True),
        ('{ field = "model", exists = true }', False),  # null counts as absent
        ('{ field = "model", exists = false }', True),
        ('{ field = "structured.data.sentiment", equals = "negative" }', True),
        ('{ field = "structured.data.sentiment", equals = "positive" }', False),
        ('{ field = "structured.data.missing", equals = "negative" }', False),
        ('{ field = "partial", equals = false }', True),
        ('{ field = "attempts", equals = true }', False),  # JSON: 1 is not true
        ('{ field = "metadata.tier", equals = 1 }', True),
        ('{ field = "reason", any_of = ["timeout_total", "stop"] }', True),
        ('{ field = "reason", any_of = ["timeout_total", "upstream_error"] }', False),
        ('{ field = "metadata.absent", any_of = ["x"] }', False),
        ('{ field = "answer", min_chars = 11 }', True),
        ('{ field = "answer", min_chars = 12 }', False),
        ('{ field = "answer", max_chars = 11 }', True),
        ('{ field = "answer", max_chars = 10 }', False),
        ('{ field = "answer", min_chars = 1, max_chars = 100 }', True),
        ('{ field = "attempts", min_chars = 0 }', False),  # not a string
        ('{ field = "structured.data.nope", max_chars = 100 }', False),
        ("{ always = true }", True),
        (
            '{ all = [{ field = "metadata.tenant", equals = "acme" },'
            ' { field = "answer", min_chars = 1 }] }',
            True,
        ),
        (
            '{ all = [{ field = "metadata.tenant", equals = "acme" },'
            ' { field = "answer", min_chars = 100 }] }',
            False,
        ),
        (
            '{ any = [{ field = "metadata.tenant", equals = "other" },'
            ' { field = "answer", min_chars = 1 }] }',
            True,
        ),
        ('{ not = { field = "partial", equals = true } }', True),
    ],
)
def test_condition_from_toml(table: str, expected: bool) -> None:
    assert when(table).matches(RECORD) is expected


def test_tables_become_the_right_models() -> None:
    assert isinstance(when('{ field = "a", exists = true }'), FieldExists)
    assert isinstance(when('{ field = "a", equals = 1 }'), FieldEquals)
    assert isinstance(when('{ field = "a", any_of = [1] }'), FieldAnyOf)
    assert isinstance(when('{ field = "a", max_chars = 1 }'), TextLength)
    assert isinstance(when("{ always = true }"), Always)
    nested = when('{ any = [{ not = { all = [{ field = "a", exists = true }] } }] }')
    assert isinstance(nested, AnyCondition)
    assert isinstance(nested.any[0], Not)
    assert isinstance(nested.any[0].not_, AllOf)


@pytest.mark.parametrize(
    "table",
    [
        '{ field = "answer" }',  # says nothing about the field
        '{ field = "a", equals = 1, colour = "red" }',  # unknown key
        '{ field = "a", min_chars = 5, max_chars = 2 }',
        '{ field = "a", any_of = [] }',
        '{ field = "", exists = true }',
        "{ all = [] }",
        "{ always = false }",
        '"always"',
    ],
)
def test_malformed_conditions_are_rejected(table: str) -> None:
    with pytest.raises(ValidationError):
        when(table)


def test_conditions_in_python_and_on_odd_records() -> None:
    negative = FieldEquals(field="structured.data.sentiment", equals="negative")
    assert negative.matches(RECORD)
    # Turns without structured data, or with odd shapes, simply do not match.
    for record in ({}, {"structured": None}, {"structured": "text"}, {"structured": [1]}):
        assert not negative.matches(record)
        assert not TextLength(field="answer", min_chars=0).matches(record)
        assert FieldExists(field="structured.data", exists=False).matches(record)
