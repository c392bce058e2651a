"""tokenwire: the streaming layer between LLM providers and the people and systems that consume
their answers.

The library in four names: :class:`Engine` runs turns (``async for event in engine.run(...)``),
:func:`create_app` serves them over HTTP, :func:`load_settings` reads the configuration, and the
event classes (:class:`Done`, :class:`TextDelta`, ...) are what a turn yields.

The event classes are imported with the package; the engine, the server and the configuration
when first used (PEP 562), so that ``import tokenwire.client`` and ``tokenwire.protocol`` need
none of the server's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .protocol import (
    Done,
    Error,
    Event,
    Phase,
    Reason,
    Start,
    Status,
    StructuredDone,
    StructuredError,
    StructuredPartial,
    StructuredReset,
    TextDelta,
    TextDone,
    ToolCall,
    ToolResult,
    Usage,
)

if TYPE_CHECKING:
    from .config import Settings, load_settings
    from .engine import (
        ActiveTurn,
        Engine,
        Hooks,
        Overloaded,
        RequestError,
        Subscription,
        TurnHandle,
        TurnRequest,
    )
    from .server import create_app, create_router, engine_lifespan

_LAZY = {
    "Settings": "config",
    "load_settings": "config",
    "ActiveTurn": "engine",
    "Engine": "engine",
    "Hooks": "engine",
    "Overloaded": "engine",
    "RequestError": "engine",
    "Subscription": "engine",
    "TurnHandle": "engine",
    "TurnRequest": "engine",
    "create_app": "server",
    "create_router": "server",
    "engine_lifespan": "server",
}
"""Public name → the submodule it is imported from on first use."""

__all__ = [
    "ActiveTurn",
    "Done",
    "Engine",
    "Error",
    "Event",
    "Hooks",
    "Overloaded",
    "Phase",
    "Reason",
    "RequestError",
    "Settings",
    "Start",
    "Status",
    "StructuredDone",
    "StructuredError",
    "StructuredPartial",
    "StructuredReset",
    "Subscription",
    "TextDelta",
    "TextDone",
    "ToolCall",
    "ToolResult",
    "TurnHandle",
    "TurnRequest",
    "Usage",
    "__version__",
    "create_app",
    "create_router",
    "engine_lifespan",
    "load_settings",
]

if not TYPE_CHECKING:  # mypy reads the imports above; a `__getattr__` would make any name Any

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_LAZY})
