"""Tools: Python functions the model may call, the registry offering them, and the runner.

Define a tool with :func:`tool`, collect tools in a :class:`ToolRegistry` (or load whole modules
with :func:`load_tool_modules`), send ``registry.specs(names)`` upstream, and run the calls the
model makes with :func:`run_tool` / :func:`run_tools`: each ends as a :class:`ToolOutcome`.
"""

from .builtin import (
    Passage,
    Retriever,
    builtin_registry,
    calculator,
    current_time,
    kb_search_tool,
)
from .registry import (
    NAME_PATTERN,
    ToolDefinition,
    ToolRegistry,
    get_tool_definition,
    load_tool_modules,
    parse_docstring,
    tool,
)
from .runner import (
    MAX_CONTENT_CHARS,
    ToolOutcome,
    extract_sources,
    run_tool,
    run_tools,
    summarize,
)

__all__ = [
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
