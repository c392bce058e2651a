from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.output import parse_and_repair

from .strategies import json_containers


@settings(max_examples=200)
@given(value=json_containers, indent=st.sampled_from([None, 1]))
def test_every_truncation_is_incomplete_never_ok(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    for cut in range(1, len(text)):
        outcome = parse_and_repair(text[:cut])
        assert outcome.status == "json_incomplete", (text[:cut], outcome)
        assert outcome.data is None


@settings(max_examples=200)
@given(value=json_containers)
def test_complete_json_is_ok_unrepaired(value: Any) -> None:
    outcome = parse_and_repair(" " + json.dumps(value) + "\n")
    assert (outcome.ok, outcome.data, outcome.repaired) == (True, value, False)


@pytest.mark.parametrize(
    ("text", "data", "repairs"),
    [
        ('```json\n{"a": 1}\n```', {"a": 1}, ["removed a markdown code fence"]),
        ("```\n[1, 2]\n```\n", [1, 2], ["removed a markdown code fence"]),
        (
            '{"a": [1, 2,], "b": {"c": 3,},}',
            {"a": [1, 2], "b": {"c": 3}},
            ["removed 3 trailing comma(s)"],
        ),
        ('{"a": ",}", "b": ",]",}', {"a": ",}", "b": ",]"}, ["removed 1 trailing comma(s)"]),
        (
            'Here you go: {"a": 1} Hope that helps.',
            {"a": 1},
            ["removed text before the JSON", "removed text after the JSON"],
        ),
        (
            'Sure!\n```json\n{"a": [1,\n]}\n```',
            {"a": [1]},
            # A fence after prose is just prose around the value.
            [
                "removed text before the JSON",
                "removed text after the JSON",
                "removed 1 trailing comma(s)",
            ],
        ),
    ],
)
def test_unambiguous_repairs(text: str, data: Any, repairs: list[str]) -> None:
    outcome = parse_and_repair(text)
    assert outcome.status == "ok", outcome
    assert (outcome.data, outcome.repaired, outcome.repairs) == (data, True, repairs)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1',
        '```json\n{"a": [1, 2',
        '```json\n{"a": "unfinished\n```',
        'Here it is: {"a": {"b": "c"}, ',
        '{"a": [1,], "b": ',
    ],
)
def test_truncated_is_incomplete(text: str) -> None:
    assert parse_and_repair(text).status == "json_incomplete"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "no json here",
        "{'a': 1}",  # single quotes: not repaired
        "{“a”: 1}",  # smart quotes: not repaired
        '{"a": 1]',
        '{"a": trux, "b": [1',  # malformed *and* unclosed: not merely truncated
        '{"a": NaN}',
        '{"a": 1} {"b": 2}',  # two values: which one?
        '{"a": [1,,]}',
        "{a: 1}",
    ],
)
def test_garbage_is_invalid(text: str) -> None:
    outcome = parse_and_repair(text)
    assert outcome.status == "json_invalid", outcome
    assert outcome.message
