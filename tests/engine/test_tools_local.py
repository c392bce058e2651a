"""Tools on the real Gemma 3 270M: the local provider lists the tools in its prompt and
constrains its choice with a JSON grammar; with `tool_choice = "required"` the first call is a
call of a real tool with arguments valid for its schema. The tool runs, and the model answers
from its result in the same turn."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from tokenwire import Done, Engine, Settings
from tokenwire.protocol import ToolCall, ToolResult

from ..support.model import HUNG_S, NO_DEADLINES
from .test_turn import check_invariants

pytestmark = pytest.mark.model


async def test_the_local_model_calls_a_required_tool_then_answers_from_its_result() -> None:
    settings = Settings(
        routes={
            "default": {
                "providers": ["local"],
                "tools": ["current_time", "calculator"],
                "tool_choice": "required",
                "max_tool_steps": 2,
            }
        },
        store={"url": ""},
        # The grammar-constrained decision is slow on a busy machine: no deadline applies.
        deadlines=NO_DEADLINES,
    )
    async with Engine(settings) as engine, asyncio.timeout(HUNG_S):
        handle = await engine.submit({"prompt": "What is 12 times 7?", "max_tokens": 32})
        events = [event async for event in handle.events()]
        specs = {spec.name: spec for spec in engine.tools.specs(["current_time", "calculator"])}
    done = check_invariants(events)
    assert isinstance(done, Done) and not done.partial
    [call] = [e for e in events if isinstance(e, ToolCall)]
    assert call.name in specs
    jsonschema.validate(json.loads(call.arguments), dict(specs[call.name].parameters))
    [result] = [e for e in events if isinstance(e, ToolResult)]
    assert result.call_id == call.call_id
    # Whatever the model chose, a usable result is listed, a failed one is not.
    assert done.tools_with_results == ([call.name] if result.ok else [])
    kinds = [e.type for e in events]
    assert kinds.index("tool.call") < kinds.index("tool.result") < kinds.index("done")
    assert {"tools", f"tool.{call.name}"} <= done.timings.keys()
