"""A module of tools for ``ToolRegistry.add_module`` tests."""

from __future__ import annotations

from tokenwire.tools import tool


@tool
def first(text: str) -> str:
    """The first tool."""
    return text


@tool(name="second-tool", timeout_s=3)
async def second(count: int = 1) -> list[int]:
    """The second tool."""
    return list(range(count))


also_first = first  # the same tool under another name is registered once


def not_a_tool(x: int) -> int:
    return x
