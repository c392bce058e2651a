"""The tool loop against real HTTP upstreams on loopback that speak the vendors' formats: the
model's streamed tool-call deltas (OpenAI's interleaved `tool_calls` deltas, Anthropic's
`tool_use` blocks with `input_json_delta`) become `tool.call` events, the tools run, and the
next request carries the calls and results in the vendor's own shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tokenwire import Done, Engine, Reason, Settings
from tokenwire.protocol import ToolCall, ToolResult
from tokenwire.tools import ToolRegistry

from ..support.upstream import Behavior, FakeUpstream
from ..support.upstream import ToolCall as UpstreamCall
from .test_turn import check_invariants


async def lookup(q: str) -> dict[str, Any]:
    """Look a question up in the manual."""
    return {"answer": f"{q}: descale every 4 weeks", "url": f"https://manual.example/{q}"}


def clock() -> str:
    """The time now."""
    return "2026-12-01T12:00:00Z"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


def settings_for(up: FakeUpstream, kind: str) -> Settings:
    base_url = up.openai_base_url if kind == "openai" else up.anthropic_base_url
    return Settings(
        providers={"up": {"kind": kind, "base_url": base_url, "model": "m", "api_key_env": None}},
        routes={"default": {"providers": ["up"], "tools": ["lookup", "clock"]}},
        tools={"builtin": False},
    )


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_vendor_tool_call_deltas_run_the_tools_and_the_model_answers(
    upstream: FakeUpstream, kind: str
) -> None:
    upstream.push(
        Behavior(
            tokens=(),
            tool_calls=(
                UpstreamCall(
                    name="lookup", arguments=('{"q', '": "ke', 'ttle"', "}"), call_id="call_a"
                ),
                UpstreamCall(name="clock", arguments=("{", "}"), call_id="call_b"),
            ),
            interleave_tool_calls=True,
        ),
        Behavior(tokens=("Descale it ", "every 4 weeks.")),
    )
    registry = ToolRegistry([lookup, clock])
    async with Engine(settings_for(upstream, kind), tools=registry) as engine:
        handle = await engine.submit({"prompt": "How often do I descale my kettle?"})
        events = [event async for event in handle.events()]
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.STOP
    assert done.answer == "Descale it every 4 weeks."
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_a", "lookup", {"q": "kettle"}),
        ("call_b", "clock", {}),
    ]
    assert all(e.ok for e in events if isinstance(e, ToolResult))
    assert done.tools_with_results == ["lookup", "clock"]
    assert done.sources == ["https://manual.example/kettle"]

    first = (await upstream.wait_requests(1)).json
    second = (await upstream.wait_requests(2)).json
    if kind == "openai":
        assert [t["function"]["name"] for t in first["tools"]] == ["lookup", "clock"]
        assert first["tool_choice"] == "auto"
        assistant, *results = second["messages"][-3:]
        assert [c["id"] for c in assistant["tool_calls"]] == ["call_a", "call_b"]
        assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"q": "kettle"}
        assert [(m["role"], m["tool_call_id"]) for m in results] == [
            ("tool", "call_a"),
            ("tool", "call_b"),
        ]
        assert "descale every 4 weeks" in results[0]["content"]
    else:
        assert [t["name"] for t in first["tools"]] == ["lookup", "clock"]
        assistant, user = second["messages"][-2:]
        uses = [b for b in assistant["content"] if b["type"] == "tool_use"]
        assert [(b["id"], b["input"]) for b in uses] == [
            ("call_a", {"q": "kettle"}),
            ("call_b", {}),
        ]
        assert user["role"] == "user"
        assert [b["tool_use_id"] for b in user["content"]] == ["call_a", "call_b"]
