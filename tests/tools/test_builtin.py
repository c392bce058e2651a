"""The built-in tools: the time, the calculator, and the knowledge-base search factory."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest

from tokenwire.providers import SourceChunk, ToolCallRequest
from tokenwire.tools import (
    ToolRegistry,
    builtin_registry,
    calculator,
    current_time,
    kb_search_tool,
    run_tool,
)


def call(name: str, arguments: str) -> ToolCallRequest:
    return ToolCallRequest(call_id="c1", name=name, arguments=arguments)


# -- current_time --------------------------------------------------------------------------------


def test_current_time_utc() -> None:
    result = current_time()
    now = datetime.fromisoformat(result["time"])
    assert now.utcoffset() == timedelta(0)
    assert result["timezone"] == "UTC"
    assert result["weekday"] == now.strftime("%A")


def test_current_time_in_a_zone() -> None:
    result = current_time("Asia/Kolkata")
    assert datetime.fromisoformat(result["time"]).utcoffset() == timedelta(hours=5, minutes=30)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", ""])
def test_current_time_unknown_zone(zone: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        current_time(zone)


async def test_current_time_through_the_runner() -> None:
    registry = builtin_registry()
    outcome = await run_tool(registry, call("current_time", ""), timeout_s=5)
    assert outcome.ok and outcome.result["timezone"] == "UTC"
    outcome = await run_tool(registry, call("current_time", '{"timezone": "Nowhere"}'), timeout_s=5)
    assert not outcome.ok
    assert outcome.error is not None and outcome.error.startswith("ValueError: unknown time zone")


# -- calculator ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("7 % 3", 1),
        ("-2 ** 2", -4),
        ("(-2) ** 3", -8),
        ("+5 - -5", 10),
        ("2 ** 0.5", 2**0.5),
        ("2 ** -1", 0.5),
        ("1_000 * 1.5", 1500.0),
        ("2 ** 1000", 2**1000),
        ("  3  ", 3),
    ],
)
def test_calculator(expression: str, value: float) -> None:
    assert calculator(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "a function call is not allowed"),
        ("__import__('os').system('true')", "not allowed"),
        ("(1).__class__", "attribute access is not allowed"),
        ("x + 1", "the name 'x' is not allowed"),
        ("'a' * 3", "only numbers are allowed"),
        ("True + 1", "only numbers are allowed"),
        ("1j * 2", "only numbers are allowed"),
        ("[1, 2]", "List is not allowed"),
        ("1 < 2", "a comparison is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("2 ^ 3", r"\^ \(use \*\* for powers\) is not supported"),
        ("1 << 2", "<< is not supported"),
        ("~1", "~ is not supported"),
        ("9 ** 9 ** 9", "exponents are limited"),
        ("10 ** 100000", "exponents are limited"),
        ("(10 ** 1000) ** 1000", "too large"),
        ("99999 ** 999", "too large"),
        ("(2 ** 1000) ** 4 * (2 ** 1000) ** 4", "too large"),
        ("10.0 ** 400", "too large"),
        ("1e308 * 10", "too large"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 +", "not an arithmetic expression"),
        ("import os", "not an arithmetic expression"),
        ("1" * 501, "longer than 500"),
    ],
)
def test_calculator_rejects(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calculator(expression)


def test_division_by_zero_is_the_tools_error() -> None:
    with pytest.raises(ZeroDivisionError):
        calculator("1 / 0")


async def test_calculator_through_the_runner() -> None:
    registry = builtin_registry()
    assert registry.names == ("current_time", "calculator")
    outcome = await run_tool(registry, call("calculator", '{"expression": "6 * 7"}'), timeout_s=5)
    assert (outcome.ok, outcome.result, outcome.content, outcome.summary) == (True, 42, "42", "42")
    outcome = await run_tool(
        registry, call("calculator", '{"expression": "__import__(\'os\')"}'), timeout_s=5
    )
    assert not outcome.ok
    assert outcome.error == (
        "ValueError: a function call is not allowed; only numbers and + - * / // % ** ( )"
    )


def test_builtin_schemas() -> None:
    specs = {spec.name: spec for spec in builtin_registry().specs()}
    assert specs["calculator"].parameters["required"] == ["expression"]
    assert specs["calculator"].description.startswith("Evaluate an arithmetic expression")
    assert specs["current_time"].parameters["properties"]["timezone"]["default"] == "UTC"
    assert "required" not in specs["current_time"].parameters


# -- kb_search -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FakePassage:
    id: str
    document_id: str
    title: str | None
    url: str | None
    text: str
    score: float


class FakeRetriever:
    def __init__(self, passages: list[FakePassage]) -> None:
        self.passages = passages
        self.queries: list[tuple[str, int]] = []

    async def search(self, query: str, *, limit: int) -> list[FakePassage]:
        self.queries.append((query, limit))
        return self.passages[:limit]


PASSAGES = [
    FakePassage("p1", "d1", "Refunds", "https://kb.example/refunds", "Refunds take 5 days.", 0.9),
    FakePassage("p2", "d2", None, None, "Untitled note. " * 200, 0.5),
    FakePassage("p3", "d3", "Third", "https://kb.example/3", "three", 0.1),
]


async def test_kb_search_tool() -> None:
    retriever = FakeRetriever(PASSAGES)
    definition = kb_search_tool(retriever, limit=2)
    assert definition.name == "kb_search" and definition.is_async
    assert definition.parameters["required"] == ["query"]
    assert definition.description.startswith("Search the knowledge base")
    registry = ToolRegistry([definition])

    outcome = await run_tool(registry, call("kb_search", '{"query": "refunds"}'), timeout_s=5)
    assert retriever.queries == [("refunds", 2)]
    assert outcome.ok and outcome.usable
    assert outcome.summary == "2 results"
    results = outcome.result["results"]
    assert results[0] == {
        "id": "p1",
        "title": "Refunds",
        "url": "https://kb.example/refunds",
        "snippet": "Refunds take 5 days.",
    }
    assert len(results[1]["snippet"]) == 1500 and results[1]["snippet"].endswith("…")
    assert outcome.sources[0] == SourceChunk(
        url="https://kb.example/refunds",
        id="p1",
        title="Refunds",
        snippet="Refunds take 5 days.",
        origin="tool:kb_search",
    )
    assert outcome.sources[1].id == "p2" and outcome.sources[1].url is None


async def test_kb_search_tool_nothing_found_and_bad_query() -> None:
    registry = ToolRegistry([kb_search_tool(FakeRetriever([]), name="docs")])
    outcome = await run_tool(registry, call("docs", '{"query": "x"}'), timeout_s=5)
    assert outcome.ok and not outcome.usable and outcome.summary == "no results"
    outcome = await run_tool(registry, call("docs", '{"query": ""}'), timeout_s=5)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.startswith("invalid arguments: query: String should have at least 1")


def test_kb_search_tool_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        kb_search_tool(FakeRetriever([]), limit=0)
