"""The runner: every call ends as an outcome the model can read; only cancellation propagates."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

from tokenwire.providers import Message, SourceChunk, ToolCallRequest
from tokenwire.tools import (
    ToolOutcome,
    ToolRegistry,
    extract_sources,
    run_tool,
    run_tools,
    summarize,
)


def call(name: str, arguments: str = "{}", call_id: str = "c1") -> ToolCallRequest:
    return ToolCallRequest(call_id=call_id, name=name, arguments=arguments)


def add(a: int, b: int = 0) -> int:
    """Add."""
    return a + b


async def echo(text: str) -> str:
    return text


class Hit(BaseModel):
    title: str
    url: str


@dataclasses.dataclass
class Stats:
    count: int
    names: list[str]


def hits() -> list[Hit]:
    return [Hit(title="A", url="https://a.example"), Hit(title="B", url="https://b.example")]


def stats() -> Stats:
    return Stats(count=2, names=["x", "y"])


def boom(x: int = 0) -> None:
    raise RuntimeError("the disk is on fire")


async def async_boom() -> None:
    raise LookupError("no such row")


async def raises_own_timeout() -> None:
    raise TimeoutError("upstream took too long")


def nothing() -> None:
    return None


def not_serializable() -> Any:
    return object()


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry(
        [add, echo, hits, stats, boom, async_boom, raises_own_timeout, nothing, not_serializable]
    )


async def test_valid_sync_and_async_calls(registry: ToolRegistry) -> None:
    outcome = await run_tool(registry, call("add", '{"a": 2, "b": 3}'), timeout_s=5)
    assert outcome.ok and outcome.usable
    assert (outcome.call_id, outcome.name, outcome.result, outcome.error) == ("c1", "add", 5, None)
    assert outcome.content == "5"
    assert outcome.summary == "5"
    assert outcome.elapsed_s >= 0 and not outcome.timed_out

    outcome = await run_tool(registry, call("echo", '{"text": "héllo\\nworld"}'), timeout_s=5)
    assert outcome.ok and outcome.result == "héllo\nworld"
    assert json.loads(outcome.content) == "héllo\nworld"
    assert outcome.summary == "héllo"


async def test_defaults_and_coercion(registry: ToolRegistry) -> None:
    outcome = await run_tool(registry, call("add", '{"a": "4"}'), timeout_s=5)
    assert outcome.result == 4


async def test_empty_arguments_mean_no_arguments(registry: ToolRegistry) -> None:
    outcome = await run_tool(registry, call("hits", ""), timeout_s=5)
    assert outcome.ok
    outcome = await run_tool(registry, call("hits", "  "), timeout_s=5)
    assert outcome.ok


async def test_models_and_dataclasses_become_json(registry: ToolRegistry) -> None:
    outcome = await run_tool(registry, call("hits"), timeout_s=5)
    assert outcome.result == [
        {"title": "A", "url": "https://a.example"},
        {"title": "B", "url": "https://b.example"},
    ]
    assert json.loads(outcome.content) == outcome.result
    assert outcome.summary == "2 results"
    outcome = await run_tool(registry, call("stats"), timeout_s=5)
    assert outcome.result == {"count": 2, "names": ["x", "y"]}


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("{not json", "arguments are not valid JSON: Expecting property name"),
        ("[1, 2]", "arguments must be a JSON object, not an array"),
        ("null", "arguments must be a JSON object, not null"),
        ('"a"', "arguments must be a JSON object, not a string"),
        ('{"a": "many"}', "invalid arguments: a: Input should be a valid integer"),
        ("{}", "invalid arguments: a: Field required"),
        ('{"a": 1, "c": 2}', "invalid arguments: c: Extra inputs are not permitted"),
    ],
)
async def test_bad_arguments(registry: ToolRegistry, arguments: str, error: str) -> None:
    outcome = await run_tool(registry, call("add", arguments), timeout_s=5)
    assert not outcome.ok and not outcome.usable
    assert outcome.result is None and outcome.sources == ()
    assert outcome.error is not None and outcome.error.startswith(error)
    assert json.loads(outcome.content) == {"error": outcome.error}
    assert outcome.summary.startswith("error: " + error[:50])


async def test_several_validation_errors_are_listed(registry: ToolRegistry) -> None:
    outcome = await run_tool(registry, call("add", '{"a": "x", "b": "y"}'), timeout_s=5)
    assert outcome.error == (
        "invalid arguments: a: Input should be a valid integer, unable to parse string as an "
        "integer; b: Input should be a valid integer, unable to parse string as an integer"
    )


async def test_unknown_tool(registry: ToolRegistry) -> None:
    outcome = await run_tool(registry, call("search_web"), timeout_s=5)
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.startswith("unknown tool 'search_web'; available tools: add, echo")


async def test_tool_exceptions_become_outcomes(
    registry: ToolRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tokenwire.tools")
    outcome = await run_tool(registry, call("boom"), timeout_s=5)
    assert not outcome.ok
    assert outcome.error == "RuntimeError: the disk is on fire"
    assert json.loads(outcome.content) == {"error": "RuntimeError: the disk is on fire"}
    assert "Traceback" not in outcome.content
    assert outcome.summary == "error: RuntimeError: the disk is on fire"
    assert "tool boom (call c1) failed: RuntimeError: the disk is on fire" in caplog.text

    outcome = await run_tool(registry, call("async_boom"), timeout_s=5)
    assert outcome.error == "LookupError: no such row"


async def test_a_tools_own_timeout_error_is_not_our_timeout(registry: ToolRegistry) -> None:
    outcome = await run_tool(registry, call("raises_own_timeout"), timeout_s=5)
    assert not outcome.ok and not outcome.timed_out
    assert outcome.error == "TimeoutError: upstream took too long"


async def test_unserializable_result(registry: ToolRegistry) -> None:
    outcome = await run_tool(registry, call("not_serializable"), timeout_s=5)
    assert not outcome.ok
    assert outcome.error is not None and "not JSON-serializable" in outcome.error


async def test_async_tool_that_hangs_times_out() -> None:
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    registry = ToolRegistry([hang])
    started = time.monotonic()
    outcome = await run_tool(registry, call("hang"), timeout_s=0.2)
    assert time.monotonic() - started < 3
    assert not outcome.ok and outcome.timed_out
    assert outcome.error == "the tool did not finish within 0.2 s"
    assert cancelled.is_set()  # the coroutine was cancelled, not left running


async def test_a_tools_own_timeout_wins() -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    registry = ToolRegistry()
    registry.register(hang, timeout_s=0.1)
    outcome = await run_tool(registry, call("hang"), timeout_s=60)
    assert outcome.timed_out
    assert outcome.error == "the tool did not finish within 0.1 s"


async def test_sync_tool_that_blocks_times_out_and_its_thread_is_abandoned() -> None:
    release = threading.Event()
    finished = threading.Event()

    def block() -> str:
        release.wait(timeout=10)
        finished.set()
        return "late"

    registry = ToolRegistry([block])
    try:
        outcome = await run_tool(registry, call("block"), timeout_s=0.2)
        assert not outcome.ok and outcome.timed_out
        assert outcome.error == "the tool did not finish within 0.2 s"
        assert not finished.is_set()  # still running in its thread
    finally:
        release.set()
        assert await asyncio.to_thread(finished.wait, 10)


async def test_outer_cancellation_propagates() -> None:
    entered = asyncio.Event()
    cleaned_up = asyncio.Event()

    async def slow() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    registry = ToolRegistry([slow])
    task = asyncio.create_task(run_tool(registry, call("slow"), timeout_s=30))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned_up.is_set()


async def test_outer_cancellation_of_a_sync_tool_propagates() -> None:
    entered = threading.Event()
    release = threading.Event()

    def blocking() -> None:
        entered.set()
        release.wait(timeout=10)

    registry = ToolRegistry([blocking])
    task = asyncio.create_task(run_tool(registry, call("blocking"), timeout_s=30))
    assert await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        release.set()


async def test_cancellation_raised_inside_the_tool_is_an_outcome() -> None:
    async def gives_up() -> None:
        raise asyncio.CancelledError

    outcome = await run_tool(ToolRegistry([gives_up]), call("gives_up"), timeout_s=5)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.startswith("CancelledError")


async def test_content_is_capped_with_a_marker() -> None:
    def big() -> str:
        return "x" * 50_000

    registry = ToolRegistry([big])
    outcome = await run_tool(registry, call("big"), timeout_s=5)
    assert len(outcome.content) <= 16_000
    assert outcome.content.startswith('"xxx')
    assert outcome.content.endswith("of 50002 characters]")
    assert "[truncated: showing the first" in outcome.content
    assert outcome.result == "x" * 50_000  # the result itself is whole

    outcome = await run_tool(registry, call("big"), timeout_s=5, max_chars=200)
    assert len(outcome.content) <= 200
    assert "truncated" in outcome.content

    small = await run_tool(ToolRegistry([add]), call("add", '{"a": 1}'), timeout_s=5, max_chars=1)
    assert small.content == "1"


@pytest.mark.parametrize(
    ("result", "summary"),
    [
        (None, "no result"),
        ("", "empty result"),
        ("\n  first line  \nsecond", "first line"),
        ("y" * 300, "y" * 199 + "…"),
        ([], "no results"),
        ([1], "1 result"),
        ([1, 2, 3], "3 results"),
        ({}, "empty result"),
        ({"results": [1, 2]}, "2 results"),
        ({"items": [1], "total": 10}, "1 item"),
        ({"sources": ["u"]}, "1 source"),
        ({"a": 1, "b": "two"}, '{"a": 1, "b": "two"}'),
        (True, "true"),
        (3.5, "3.5"),
    ],
)
def test_summary(result: Any, summary: str) -> None:
    assert summarize(result) == summary
    assert len(summarize(result)) <= 200


def test_a_failed_outcome_is_never_usable() -> None:
    outcome = ToolOutcome(
        call_id="c", name="t", ok=False, result=None, content="", summary="", error="x"
    )
    assert not outcome.usable


@pytest.mark.parametrize(
    ("result", "usable"),
    [
        (None, False),
        ("", False),
        ("  ", False),
        ([], False),
        ({}, False),
        ({"results": []}, False),
        ({"results": [], "note": None}, False),
        (0, True),
        (False, True),
        ("x", True),
        ([0], True),
        ({"results": [], "total": 0}, True),
    ],
)
def test_usable(result: Any, usable: bool) -> None:
    outcome = ToolOutcome(call_id="c", name="t", ok=True, result=result, content="", summary="")
    assert outcome.usable is usable


async def test_long_errors_give_a_short_summary() -> None:
    def fails() -> None:
        raise ValueError("bad\n" + "z" * 500)

    outcome = await run_tool(ToolRegistry([fails]), call("fails"), timeout_s=5)
    assert outcome.summary == "error: ValueError: bad"
    assert outcome.error is not None and outcome.error.endswith("z" * 500)

    def fails_long() -> None:
        raise ValueError("q" * 500)

    outcome = await run_tool(ToolRegistry([fails_long]), call("fails_long"), timeout_s=5)
    assert len(outcome.summary) == 200 and outcome.summary.endswith("…")


def test_to_message() -> None:
    outcome = ToolOutcome(call_id="c9", name="t", ok=True, result=1, content="1", summary="1")
    assert outcome.to_message() == Message(role="tool", content="1", tool_call_id="c9", name="t")


# -- sources -------------------------------------------------------------------------------------


def test_sources_from_a_sources_list() -> None:
    result = {
        "answer": "42",
        "sources": [
            "https://one.example",
            {"url": "https://two.example", "title": "Two", "snippet": "about two"},
            {"id": "doc-3", "title": "Three", "text": "the text of three"},
            {"title": "nameless"},
            17,
        ],
    }
    assert extract_sources(result, origin="tool:t") == (
        SourceChunk(url="https://one.example", origin="tool:t"),
        SourceChunk(url="https://two.example", title="Two", snippet="about two", origin="tool:t"),
        SourceChunk(id="doc-3", title="Three", snippet="the text of three", origin="tool:t"),
    )


def test_sources_from_a_results_list() -> None:
    result = {"results": [{"id": 7, "url": "https://r.example", "title": "R", "snippet": "s"}]}
    assert extract_sources(result, origin="tool:kb") == (
        SourceChunk(url="https://r.example", id="7", title="R", snippet="s", origin="tool:kb"),
    )


def test_a_result_that_is_a_source() -> None:
    result = {"url": "https://page.example", "title": "Page", "text": "t" * 1000}
    (source,) = extract_sources(result, origin="tool:fetch")
    assert source.url == "https://page.example" and source.title == "Page"
    assert source.snippet is not None and len(source.snippet) == 500
    # a dict that only has an id is not a source by itself (ids are everywhere)
    assert extract_sources({"id": 3, "name": "x"}, origin="tool:t") == ()


def test_a_list_of_sources() -> None:
    result = [
        {"url": "https://a.example", "title": "A"},
        {"id": "b"},
        "not a source",
        {"title": "no name"},
    ]
    assert extract_sources(result, origin="tool:t") == (
        SourceChunk(url="https://a.example", title="A", origin="tool:t"),
        SourceChunk(id="b", origin="tool:t"),
    )


def test_no_sources() -> None:
    for result in (None, "https://x.example", 3, {"count": 1}, [1, 2], {"sources": "nope"}):
        assert extract_sources(result, origin="tool:t") == ()


async def test_outcome_carries_sources(registry: ToolRegistry) -> None:
    outcome = await run_tool(registry, call("hits"), timeout_s=5)
    assert [(s.url, s.title, s.origin) for s in outcome.sources] == [
        ("https://a.example", "A", "tool:hits"),
        ("https://b.example", "B", "tool:hits"),
    ]


# -- several calls -------------------------------------------------------------------------------


async def test_run_tools_runs_concurrently_and_keeps_call_order() -> None:
    barrier = asyncio.Barrier(2)
    second_done = asyncio.Event()

    async def slow_first() -> str:
        await barrier.wait()  # both calls must be running for either to pass this
        await second_done.wait()  # and this one finishes last
        return "first"

    async def quick_second() -> str:
        await barrier.wait()
        second_done.set()
        return "second"

    registry = ToolRegistry([slow_first, quick_second, add])
    outcomes = await run_tools(
        registry,
        [
            call("slow_first", call_id="a"),
            call("quick_second", call_id="b"),
            call("add", "oops", call_id="c"),
        ],
        timeout_s=5,
    )
    assert [(o.call_id, o.ok, o.result) for o in outcomes] == [
        ("a", True, "first"),
        ("b", True, "second"),
        ("c", False, None),
    ]


async def test_run_tools_with_no_calls() -> None:
    assert await run_tools(ToolRegistry(), [], timeout_s=1) == []


async def test_run_tools_cancellation_cancels_every_call() -> None:
    entered = asyncio.Barrier(3)
    cleaned: list[str] = []

    async def wait_forever(label: str) -> None:
        await entered.wait()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(label)

    registry = ToolRegistry([wait_forever])
    task = asyncio.create_task(
        run_tools(
            registry,
            [call("wait_forever", '{"label": "x"}'), call("wait_forever", '{"label": "y"}')],
            timeout_s=30,
        )
    )
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(cleaned) == ["x", "y"]
