"""The tool-calling requests the vendor adapters' tests send: the same tools and question, so
each test only states its vendor's wire shape."""

from __future__ import annotations

from tokenwire.providers import GenerationRequest, Message, ToolSpec

TOOLS = (
    ToolSpec(
        "get_weather",
        "The weather in a city.",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    ),
    ToolSpec("current_time", "The current time.", {"type": "object", "properties": {}}),
)

SYSTEM = Message("system", "be brief")
QUESTION = Message("user", "Weather in Oslo, and the time?")

FIRST = GenerationRequest(
    messages=(SYSTEM, QUESTION), max_tokens=64, tools=TOOLS, tool_choice="required"
)
"""The first call of a tool loop: a tool must be called."""
