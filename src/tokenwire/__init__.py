"""tokenwire: the streaming layer between LLM providers and the people and systems that consume
their answers.

The library in four names: :class:`Engine` runs turns (``async for event in engine.run(...)``),
:func:`create_app` serves them over HTTP, :func:`load_settings` reads the configuration, and the
event classes (:class:`Done`, :class:`TextDelta`, ...) are what a turn yields.
"""

__version__ = "0.1.0"

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
    TextDelta,
    TextDone,
    ToolCall,
    ToolResult,
    Usage,
)
from .server import create_app, create_router, engine_lifespan

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
