"""The scripted provider's tool-loop scripts: per-step streams, finish reasons, faults, requests."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.support.chunks import collect, raises, text
from tokenwire.providers.base import (
    Finish,
    GenerationRequest,
    Message,
    ToolCallChunk,
    ToolCallRequest,
    ToolSpec,
)
from tokenwire.providers.scripted import ScriptedProvider, parse_script

CLOCK = ToolSpec("current_time", "The current time.", {"type": "object", "properties": {}})
CALL = {"name": "current_time", "arguments": ["{", "}"], "call_id": "c1"}


def step(script: dict[str, Any], n: int, attempt: int = 1, **more: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", "time?"),),
        max_tokens=32,
        script=script,
        step=n,
        attempt=attempt,
        tools=(CLOCK,),
        **more,
    )


async def test_then_scripts_the_later_steps_of_a_tool_loop() -> None:
    script = {
        "tokens": [],
        "tool_calls": [CALL],
        "then": [{"tokens": ["second"]}, {"tokens": ["third"], "finish": "length"}],
    }
    provider = ScriptedProvider()
    first = await collect(provider.stream(step(script, 1)))
    assert [c for c in first if isinstance(c, ToolCallChunk)] == [
        ToolCallChunk(index=0, call_id="c1", name="current_time"),
        ToolCallChunk(index=0, arguments_delta="{"),
        ToolCallChunk(index=0, arguments_delta="}"),
    ]
    assert first[-1] == Finish("tool_calls")  # tool calls and no finish given: tool_calls
    second = await collect(provider.stream(step(script, 2)))
    assert (text(second), second[-1]) == ("second", Finish("stop"))
    for n in (3, 4, 9):  # past the list's end: the last one
        later = await collect(provider.stream(step(script, n)))
        assert (text(later), later[-1]) == ("third", Finish("length"))
    # Without `then` every step streams the script itself.
    again = await collect(provider.stream(step({"tool_calls": [CALL]}, 2)))
    assert again[-1] == Finish("tool_calls")
    assert provider.started == provider.finished == 6


def test_an_explicit_finish_is_honoured_and_then_is_one_level_deep() -> None:
    assert parse_script({"tool_calls": [CALL]}).finish_reason == "tool_calls"
    assert parse_script({"tool_calls": [CALL], "finish": "stop"}).finish_reason == "stop"
    assert parse_script({"tool_calls": [CALL], "finish": "length"}).finish_reason == "length"
    assert parse_script({}).finish_reason == "stop"
    with pytest.raises(ValueError, match="then"):
        parse_script({"then": [{"then": [{}]}]})
    with pytest.raises(ValueError):
        parse_script({"then": [{}] * 17})


async def test_a_steps_fault_and_its_times_count_that_steps_attempts() -> None:
    script = {
        "tool_calls": [CALL],
        "fault": {"kind": "fail", "at": 0, "times": 1, "message": "step one"},
        "then": [{"tokens": ["ok"], "fault": {"kind": "fail", "times": 2, "message": "step two"}}],
    }
    provider = ScriptedProvider()
    # Step 1 as before: `times` against the turn's attempt number.
    _, error = await raises(provider.stream(step(script, 1, attempt=1)))
    assert error.detail == "step one"
    assert (await collect(provider.stream(step(script, 1, attempt=2))))[-1] == Finish("tool_calls")
    # Step 2 starts at the turn's attempt 3: its own first two attempts fail, the third answers.
    for attempt in (3, 4):
        _, error = await raises(provider.stream(step(script, 2, attempt=attempt)))
        assert error.detail == "step two"
    assert text(await collect(provider.stream(step(script, 2, attempt=5)))) == "ok"
    # A new turn (its own script) counts from its own first call at the step.
    fresh = dict(script)
    _, error = await raises(provider.stream(step(fresh, 2, attempt=2)))
    assert error.detail == "step two"
    # An engine that numbers attempts per step works the same way.
    per_step = dict(script)
    outcomes = []
    for attempt in (1, 2, 3):
        try:
            await collect(provider.stream(step(per_step, 2, attempt=attempt)))
            outcomes.append("ok")
        except Exception:
            outcomes.append("fail")
    assert outcomes == ["fail", "fail", "ok"]


async def test_requests_are_recorded_with_their_tools_and_tool_results() -> None:
    provider = ScriptedProvider()
    script = {"tool_calls": [CALL], "then": [{"tokens": ["It is noon."]}]}
    first = step(script, 1)
    await collect(provider.stream(first))
    follow_up = dataclasses.replace(
        first,
        step=2,
        messages=(
            *first.messages,
            Message("assistant", "", tool_calls=(ToolCallRequest("c1", "current_time", "{}"),)),
            Message("tool", '"12:00"', tool_call_id="c1", name="current_time"),
        ),
    )
    assert text(await collect(provider.stream(follow_up))) == "It is noon."
    assert list(provider.requests) == [first, follow_up]
    seen = provider.requests[-1]
    assert seen.tools == (CLOCK,) and seen.step == 2
    assert seen.messages[-1].tool_call_id == "c1" and seen.messages[-2].tool_calls[0].name == (
        "current_time"
    )
    assert provider.requests.maxlen is not None and provider.requests.maxlen <= 256
