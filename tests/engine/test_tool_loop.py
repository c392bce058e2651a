"""Tools mid-stream: the model's tool-call deltas become `tool.call` events, the tools run (each
with its timeout; failures become results), `tool.result` events follow, and the model is
called again with the results, up to the route's step limit. Exactly one terminal event, always.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tokenwire import Done, Engine, Event, Reason
from tokenwire.protocol import Status, ToolCall, ToolResult
from tokenwire.tools import ToolRegistry

from .conftest import scripted, scripted_settings
from .test_turn import check_invariants

GUARD_S = 10.0
"""Upper bound on waits for events that must come (not a synchronisation)."""


class Toolbox:
    """The tools the tests offer, with what each saw (real functions, run by the real runner)."""

    def __init__(self) -> None:
        self.lookups: list[str] = []
        self.hang_started = asyncio.Event()
        self.hang_cancelled = asyncio.Event()
        self.registry = ToolRegistry()
        self.registry.register(self.lookup, name="lookup")
        self.registry.register(self.boom, name="boom")
        self.registry.register(self.hang, name="hang", timeout_s=0.2)
        self.registry.register(self.nothing, name="nothing")
        self.registry.register(self.hang_long, name="hang_long", timeout_s=60)
        self.registry.register(self.slow, name="slow", timeout_s=60)

    async def lookup(self, q: str) -> dict[str, Any]:
        """Look a question up."""
        self.lookups.append(q)
        return {
            "answer": f"found {q}",
            "sources": [{"url": f"https://kb.example/{q}", "title": f"About {q}"}],
        }

    def boom(self) -> str:
        """Always fails."""
        raise RuntimeError("the tool broke")

    async def hang(self) -> str:
        """Never returns (its timeout ends it)."""
        await asyncio.Event().wait()
        return "unreachable"

    async def hang_long(self) -> str:
        """Returns only when cancelled."""
        self.hang_started.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.hang_cancelled.set()
        return "unreachable"

    async def slow(self, seconds: float) -> str:
        """A tool slower than the turn's idle deadline (the fault under test, not a wait)."""
        await asyncio.sleep(seconds)
        return "finally"

    def nothing(self) -> list[str]:
        """Returns an empty result."""
        return []


@pytest.fixture
def toolbox() -> Toolbox:
    return Toolbox()


@pytest.fixture
async def engine(toolbox: Toolbox) -> AsyncIterator[Engine]:
    settings = scripted_settings(
        routes={
            "default": {"providers": ["a"]},
            "tools": {
                "providers": ["a", "b"],
                "tools": ["lookup", "boom", "hang", "nothing", "hang_long", "slow"],
                "max_tool_steps": 3,
            },
        },
        tools={"builtin": False, "timeout_s": 5},
    )
    async with Engine(settings, tools=toolbox.registry) as eng:
        yield eng


def call(name: str, *pieces: str, call_id: str) -> dict[str, Any]:
    return {"name": name, "arguments": list(pieces) or ["{}"], "call_id": call_id}


async def run(engine: Engine, script: dict[str, Any], route: str = "tools") -> list[Event]:
    handle = await engine.submit({"prompt": "help", "route": route, "script": script})
    return [event async for event in handle.events()]


async def test_split_arguments_and_several_calls_run_then_the_model_answers(
    engine: Engine, toolbox: Toolbox
) -> None:
    script = {
        "tokens": ["Let me check. "],
        "tool_calls": [
            call("lookup", '{"q"', ': "ket', 'tle"}', call_id="c1"),
            call("boom", call_id="c2"),
            call("nothing", call_id="c3"),
        ],
        "then": [{"tokens": ["The ", "kettle ", "is fine."]}],
    }
    events = await run(engine, script)
    done = check_invariants(events)
    assert isinstance(done, Done)
    assert done.reason is Reason.STOP and done.status == "completed"
    assert done.answer == "Let me check. The kettle is fine."
    assert toolbox.lookups == ["kettle"]
    # Usage is the turn's: both model calls (1 token, then 3).
    assert done.usage is not None and done.usage["output_tokens"] == 4

    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("c1", "lookup", {"q": "kettle"}),
        ("c2", "boom", {}),
        ("c3", "nothing", {}),
    ]
    results = {e.call_id: e for e in events if isinstance(e, ToolResult)}
    assert results["c1"].ok and not results["c2"].ok and results["c3"].ok
    assert "RuntimeError: the tool broke" in results["c2"].summary
    # Order: text of step 1, the calls, their results, then the text of step 2.
    kinds = [e.type for e in events]
    first_result = min(kinds.index("tool.result"), len(kinds))
    assert kinds.index("tool.call") < first_result
    assert max(i for i, k in enumerate(kinds) if k == "tool.call") < first_result
    assert max(i for i, k in enumerate(kinds) if k == "tool.result") < kinds.index("text.done")
    phases = [e.phase.value for e in events if isinstance(e, Status)]
    assert phases == ["queued", "generating", "calling_tools", "generating"]
    # Only the tool that returned something usable counts.
    assert done.tools_with_results == ["lookup"]
    assert done.sources == ["https://kb.example/kettle"]
    assert done.source_details[0]["origin"] == "tool:lookup"
    assert {"tool.lookup", "tool.boom", "tool.nothing", "tools"} <= done.timings.keys()

    # The second call carried the conversation so far: the calls, then one result per call.
    second = scripted(engine).requests[-1]
    assert second.step == 2
    assistant = second.messages[-4]
    assert assistant.role == "assistant" and assistant.content == "Let me check. "
    assert [c.call_id for c in assistant.tool_calls] == ["c1", "c2", "c3"]
    tool_messages = second.messages[-3:]
    assert [(m.role, m.tool_call_id, m.name) for m in tool_messages] == [
        ("tool", "c1", "lookup"),
        ("tool", "c2", "boom"),
        ("tool", "c3", "nothing"),
    ]
    assert json.loads(tool_messages[0].content)["answer"] == "found kettle"
    assert "error" in json.loads(tool_messages[1].content)
    assert [t.name for t in second.tools] == [
        "lookup",
        "boom",
        "hang",
        "nothing",
        "hang_long",
        "slow",
    ]


async def test_a_hanging_tool_times_out_into_a_result_and_the_turn_completes(
    engine: Engine,
) -> None:
    script = {
        "tokens": [],
        "tool_calls": [call("hang", call_id="h1")],
        "then": [{"tokens": ["Done without it."]}],
    }
    events = await run(engine, script)
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.STOP
    [result] = [e for e in events if isinstance(e, ToolResult)]
    assert not result.ok and "did not finish within 0.2 s" in result.summary
    assert done.tools_with_results == []
    assert done.answer == "Done without it."


async def test_unknown_tools_and_bad_arguments_become_failed_results(engine: Engine) -> None:
    script = {
        "tokens": [],
        "tool_calls": [
            call("no_such_tool", call_id="u1"),
            call("lookup", '{"q": 5', call_id="u2"),
            call("lookup", '{"q": 5}', call_id="u3"),
        ],
        "then": [{"tokens": ["ok"]}],
    }
    events = await run(engine, script)
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.STOP
    results = {e.call_id: e for e in events if isinstance(e, ToolResult)}
    assert not any(r.ok for r in results.values())
    assert len(results) == 3


async def test_the_last_step_offers_no_tools_and_a_model_that_calls_anyway_ends_tool_limit(
    engine: Engine, toolbox: Toolbox
) -> None:
    again = {"tokens": [], "tool_calls": [call("lookup", '{"q": "more"}', call_id="again")]}
    script = {**again, "then": [again, again]}
    events = await run(engine, script)
    done = check_invariants(events)
    assert isinstance(done, Done)
    assert done.reason is Reason.TOOL_LIMIT and done.partial and done.status == "incomplete"
    # max_tool_steps = 3: two rounds ran, the third call was offered no tools.
    assert toolbox.lookups == ["more", "more"]
    requests = list(scripted(engine).requests)[-3:]
    assert [len(r.tools) for r in requests] == [6, 6, 0]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [r.ok for r in results] == [True, True, False]
    assert results[-1].summary.startswith("not run")


async def test_a_failure_after_the_tools_ran_retries_that_step_only(
    engine: Engine, toolbox: Toolbox
) -> None:
    script = {
        "tokens": [],
        "tool_calls": [call("lookup", '{"q": "once"}', call_id="r1")],
        "then": [{"tokens": ["answer"], "fault": {"kind": "fail", "at": 0, "times": 3}}],
    }
    events = await run(engine, script)
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.STOP
    assert done.answer == "answer"
    assert toolbox.lookups == ["once"]  # the tool ran once, whatever the retries
    assert len([e for e in events if isinstance(e, ToolCall)]) == 1


async def test_cancel_while_a_tool_runs_stops_it_and_ends_once(
    engine: Engine, toolbox: Toolbox
) -> None:
    script = {
        "tokens": [],
        "tool_calls": [call("hang_long", call_id="l1")],
        "then": [{"tokens": ["never"]}],
    }
    handle = await engine.submit({"prompt": "help", "route": "tools", "script": script})
    async with asyncio.timeout(GUARD_S):  # a guard: a broken cancel fails, never hangs
        await toolbox.hang_started.wait()
        assert handle.cancel()
        events = [event async for event in handle.events()]
        await toolbox.hang_cancelled.wait()  # the tool's task was cancelled, not left running
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.CANCELLED
    assert not [e for e in events if isinstance(e, ToolResult)]


async def test_a_route_without_tools_passes_the_calls_through(engine: Engine) -> None:
    script = {"tokens": [], "tool_calls": [call("lookup", '{"q": "x"}', call_id="p1")]}
    events = await run(engine, script, route="default")
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.STOP
    assert [e.call_id for e in events if isinstance(e, ToolCall)] == ["p1"]
    assert not [e for e in events if isinstance(e, ToolResult)]
    assert len(scripted(engine).requests) == 1  # nobody called the model again


async def test_unknown_route_tools_are_refused_at_startup() -> None:
    settings = scripted_settings(
        routes={"default": {"providers": ["a"], "tools": ["missing"]}},
        tools={"builtin": False},
    )
    with pytest.raises(ValueError, match="unknown tools missing"):
        Engine(settings)


async def test_idle_and_first_token_deadlines_wait_while_tools_run(engine: Engine) -> None:
    # The deadlines are long enough for the scripted text on a busy machine; the tool outlasts
    # them three times over, so a deadline counted during it would fire.
    script = {
        "tokens": ["Checking. "],
        "tool_calls": [call("slow", '{"seconds": 3}', call_id="s1")],
        "then": [{"tokens": ["Done."]}],
    }
    handle = await engine.submit(
        {
            "prompt": "help",
            "route": "tools",
            "script": script,
            "deadlines": {"first_token_s": 1, "idle_s": 1},
        }
    )
    events = [event async for event in handle.events()]
    done = check_invariants(events)
    # The tool took three idle deadlines; the turn still completed.
    assert isinstance(done, Done) and done.reason is Reason.STOP
    assert done.answer == "Checking. Done."
    assert done.tools_with_results == ["slow"]


async def test_the_total_deadline_holds_while_tools_run(engine: Engine) -> None:
    script = {
        "tokens": ["Checking."],
        "tool_calls": [call("slow", '{"seconds": 30}', call_id="s2")],
    }
    handle = await engine.submit(
        {"prompt": "help", "route": "tools", "script": script, "deadlines": {"total_s": 0.3}}
    )
    async with asyncio.timeout(GUARD_S):
        events = [event async for event in handle.events()]
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.TIMEOUT_TOTAL and done.partial
    assert done.answer == "Checking."
    assert not [e for e in events if isinstance(e, ToolResult)]
