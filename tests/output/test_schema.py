from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from tokenwire.output import SchemaRegistry, check_schema, validate


class Ticket(BaseModel):
    title: str = Field(max_length=50)
    priority: int = Field(ge=1, le=5)
    tags: list[str] = []


CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_a_pydantic_model_registers_under_its_name_and_validates() -> None:
    registry = SchemaRegistry()
    registered = registry.register_model(Ticket)
    resolved = registry.resolve("Ticket")
    assert resolved is registered
    assert resolved.name == "Ticket" and resolved.model is Ticket
    assert resolved.json_schema == Ticket.model_json_schema()
    assert validate({"title": "Printer on fire", "priority": 5}, resolved) == []
    issues = validate({"title": "x", "priority": 9, "tags": [1]}, resolved)
    assert [(i.path, i.message) for i in issues] == [
        ("$.priority", "9 is greater than the maximum of 5"),
        ("$.tags[0]", "1 is not of type 'string'"),
    ]
    assert registry.register_model(Ticket, name="tickets").name == "tickets"
    assert list(registry) == ["Ticket", "tickets"] and "tickets" in registry


def test_config_schemas_and_inline_schemas() -> None:
    registry = SchemaRegistry({"city": CITY})
    assert registry.resolve("city").name == "city"
    inline = registry.resolve({"type": "array", "maxItems": 2})
    assert inline.name is None
    assert validate([1, 2], inline) == []
    assert [str(i) for i in validate([1, 2, 3], inline)] == ["$: [1, 2, 3] is too long"]


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "strnig"}, "not a valid JSON Schema at type"),
        ({"properties": {"a": {"minLength": -1}}}, "properties/a/minLength"),
        ([], "must be a JSON Schema object"),
    ],
)
def test_invalid_schemas_are_rejected_clearly(schema: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        check_schema(schema)
    with pytest.raises(ValueError, match="schema 'bad'"):
        SchemaRegistry().register("bad", schema)
    with pytest.raises(ValueError, match="inline schema"):
        SchemaRegistry().resolve(schema)


def test_unknown_names_and_conflicting_registrations() -> None:
    registry = SchemaRegistry({"city": CITY})
    with pytest.raises(ValueError, match=r"unknown schema 'town' \(registered: city\)"):
        registry.resolve("town")
    assert registry.register("city", dict(CITY)).name == "city"  # same schema: idempotent
    with pytest.raises(ValueError, match="already registered"):
        registry.register("city", {"type": "string"})
    with pytest.raises(ValueError, match="non-empty"):
        registry.register(" ", CITY)


def test_issues_are_bounded_ordered_and_short() -> None:
    resolved = check_schema({"type": "array", "items": {"type": "integer"}})
    issues = validate(["x" * 500] * 30, resolved)
    assert len(issues) == 10
    assert [i.path for i in issues] == [f"$[{n}]" for n in range(10)]
    assert all(len(i.message) <= 200 for i in issues)
    assert len(validate(["x"] * 30, resolved, max_issues=3)) == 3


def test_formats_are_checked() -> None:
    resolved = check_schema({"type": "string", "format": "email"})
    assert validate("a@example.org", resolved) == []
    assert validate("not an email", resolved) != []
