"""The public API of ``tokenwire.tools`` is what ``__all__`` says: pinned here."""

from __future__ import annotations

import tokenwire.tools


def test_all_is_sorted_and_every_name_exists() -> None:
    names = tokenwire.tools.__all__

    def isort_style(name: str) -> tuple[int, str]:  # constants, classes, then the rest
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert names == sorted(names, key=isort_style)
    for name in names:
        assert hasattr(tokenwire.tools, name), name


def test_tools_api() -> None:
    assert tokenwire.tools.__all__ == [
        "MAX_CONTENT_CHARS",
        "NAME_PATTERN",
        "Passage",
        "Retriever",
        "ToolDefinition",
        "ToolOutcome",
        "ToolRegistry",
        "builtin_registry",
        "calculator",
        "current_time",
        "extract_sources",
        "get_tool_definition",
        "kb_search_tool",
        "load_tool_modules",
        "parse_docstring",
        "run_tool",
        "run_tools",
        "summarize",
        "tool",
    ]
