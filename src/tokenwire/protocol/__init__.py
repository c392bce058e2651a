"""Sans-I/O protocol core: events, their JSON and SSE framing, the WebSocket message schema and
the turn state machine. No asyncio, no sockets: bytes or dicts in, events out."""

from .codec import decode_event, encode_event, encode_event_with, event_to_dict
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import (
    EVENT_TYPES,
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
    TerminalEvent,
    TextDelta,
    TextDone,
    ToolCall,
    ToolResult,
    Usage,
    is_terminal,
)
from .lifecycle import TurnLifecycle, TurnState
from .sse import (
    SSEDecoder,
    SSEMessage,
    encode_sse_comment,
    encode_sse_event,
    encode_sse_message,
)

__all__ = [
    "EVENT_TYPES",
    "Done",
    "Error",
    "Event",
    "LocalProtocolError",
    "Phase",
    "ProtocolError",
    "Reason",
    "RemoteProtocolError",
    "SSEDecoder",
    "SSEMessage",
    "Start",
    "Status",
    "StructuredDone",
    "StructuredError",
    "StructuredPartial",
    "TerminalEvent",
    "TextDelta",
    "TextDone",
    "ToolCall",
    "ToolResult",
    "TurnLifecycle",
    "TurnState",
    "Usage",
    "decode_event",
    "encode_event",
    "encode_event_with",
    "encode_sse_comment",
    "encode_sse_event",
    "encode_sse_message",
    "event_to_dict",
    "is_terminal",
]
