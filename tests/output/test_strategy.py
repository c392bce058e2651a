from __future__ import annotations

import pytest
from pydantic import ValidationError

from tokenwire.output import ExtractionSpec, choose_strategy


def spec(**fields: object) -> ExtractionSpec:
    return ExtractionSpec.model_validate({"schema": "ticket", **fields})


def test_defaults_and_the_schema_alias() -> None:
    s = spec()
    assert (s.json_schema, s.strategy, s.max_retries) == ("ticket", "auto", 2)
    assert s.depends_on_text and s.latency == "normal"
    inline = ExtractionSpec.model_validate({"schema": {"type": "object"}})
    assert inline.json_schema == {"type": "object"}


@pytest.mark.parametrize(
    "body",
    [
        {"schema": "t", "strategy": "magic"},
        {"schema": "t", "unknown": 1},
        {"schema": "t", "max_retries": "2"},
        {"schema": "t", "max_retries": -1},
        {"schema": 5},
        {},
    ],
)
def test_strict(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ExtractionSpec.model_validate(body)


@pytest.mark.parametrize(
    ("fields", "inline_capable", "expected"),
    [
        ({}, True, "sequential"),
        ({"latency": "low"}, True, "inline"),
        ({"latency": "low"}, False, "sequential"),
        ({"depends_on_text": False}, True, "parallel"),
        ({"depends_on_text": False, "latency": "low"}, True, "parallel"),
        ({"strategy": "inline"}, False, "inline"),
        ({"strategy": "sequential", "latency": "low"}, True, "sequential"),
        ({"strategy": "parallel"}, True, "parallel"),
    ],
)
def test_choose_strategy(fields: dict[str, object], inline_capable: bool, expected: str) -> None:
    assert choose_strategy(spec(**fields), inline_capable=inline_capable) == expected
