"""The events of wire protocol v1: small, frozen, tagged values.

Every event carries ``type`` (its tag), ``stream_id`` and ``seq``. Code that produces events
builds a *draft* (``stream_id=""``, ``seq=0``) and hands it to :class:`~tokenwire.protocol.
lifecycle.TurnLifecycle`, which stamps both and refuses anything the turn's state forbids. So a
consumer may rely on: ``seq`` starts at 1 and grows by exactly 1; there is exactly one terminal
event (:class:`Done` or :class:`Error`); nothing follows it.

The JSON form of an event is the flat object of its fields (``type`` first), produced by
:func:`tokenwire.protocol.codec.encode_event`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class Reason(StrEnum):
    """Why a turn ended. ``stop`` is the only reason whose turn is ``completed``."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    CLIENT_GONE = "client_gone"
    TIMEOUT_FIRST_TOKEN = "timeout_first_token"
    TIMEOUT_IDLE = "timeout_idle"
    TIMEOUT_TOTAL = "timeout_total"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TRUNCATED = "upstream_truncated"
    WORKER_LOST = "worker_lost"
    LOG_UNAVAILABLE = "log_unavailable"
    """Scale-out: the turn's events could not be written to Redis, so it was stopped."""
    SHUTDOWN = "shutdown"
    CONTENT_FILTER = "content_filter"
    TOOL_LIMIT = "tool_limit"
    """The model still called tools on its last allowed step (``max_tool_steps``)."""

    @property
    def is_partial(self) -> bool:
        """True when the answer was cut short by something other than the model or the request.

        ``length`` (max_tokens reached) and ``content_filter`` are the model's own ending: the
        answer is all the model will give, so it is not partial, though not ``completed``.
        """
        return self not in _WHOLE_ANSWER_REASONS

    @property
    def is_stop_request(self) -> bool:
        """True for endings somebody asked for (cancel, disconnect, shutdown), never failures."""
        return self in _STOP_REQUEST_REASONS


_WHOLE_ANSWER_REASONS = frozenset({Reason.STOP, Reason.LENGTH, Reason.CONTENT_FILTER})
_STOP_REQUEST_REASONS = frozenset({Reason.CANCELLED, Reason.CLIENT_GONE, Reason.SHUTDOWN})


class Phase(StrEnum):
    """The phases a ``status`` event announces."""

    QUEUED = "queued"
    RETRIEVING = "retrieving"
    """Looking passages up in the knowledge base, before generation."""
    GENERATING = "generating"
    CALLING_TOOLS = "calling_tools"
    """The model called tools; they run now, then it generates again."""
    EXTRACTING = "extracting"
    FINALIZING = "finalizing"


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """The turn was accepted. Always the first event (``seq`` 1)."""

    type: Literal["start"] = field(default="start", init=False)
    stream_id: str = ""
    seq: int = 0
    conversation_id: str | None = None
    """The conversation this turn belongs to, when the request named one."""
    model: str
    """The model of the first provider in the route's chain (``done.model`` says which answered)."""
    route: str
    """The route chosen for this turn."""
    created_at: float
    """Unix time, seconds, when the turn was accepted."""
    tier: str | None = None
    """The model tier chosen on the route (``default`` for a route without named tiers)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """The turn entered a new phase."""

    type: Literal["status"] = field(default="status", init=False)
    stream_id: str = ""
    seq: int = 0
    phase: Phase


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    """Visible text, coalesced: concatenating every ``delta`` gives ``text.done``'s ``text``."""

    type: Literal["text.delta"] = field(default="text.delta", init=False)
    stream_id: str = ""
    seq: int = 0
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDone:
    """The visible text has ended; ``text`` is exactly what the deltas carried."""

    type: Literal["text.done"] = field(default="text.done", init=False)
    stream_id: str = ""
    seq: int = 0
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """The model called a tool; ``arguments`` is the assembled JSON text of its arguments."""

    type: Literal["tool.call"] = field(default="tool.call", init=False)
    stream_id: str = ""
    seq: int = 0
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """A tool finished (``ok`` false when it raised or timed out)."""

    type: Literal["tool.result"] = field(default="tool.result", init=False)
    stream_id: str = ""
    seq: int = 0
    call_id: str
    ok: bool
    summary: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StructuredPartial:
    """The structured object so far, while its JSON streams."""

    type: Literal["structured.partial"] = field(default="structured.partial", init=False)
    stream_id: str = ""
    seq: int = 0
    data: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class StructuredReset:
    """The structured object starts over: forget every ``structured.partial`` before this one.

    Sent when a re-ask begins (the last attempt's object did not parse or validate), and when
    the answering call is retried after its inline block had been previewed. The partials that
    follow are the new attempt's, from an empty object.
    """

    type: Literal["structured.reset"] = field(default="structured.reset", init=False)
    stream_id: str = ""
    seq: int = 0
    attempt: int
    """The extraction attempt that starts now (1 when the answering call was retried)."""
    code: str
    """Why the object starts over: the failed attempt's code (``schema_invalid``,
    ``json_invalid``, ``json_incomplete``) or ``answer_retried``; never the model's text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StructuredDone:
    """The final structured object."""

    type: Literal["structured.done"] = field(default="structured.done", init=False)
    stream_id: str = ""
    seq: int = 0
    data: Any
    schema: str | None = None
    valid: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class StructuredError:
    """Structured extraction failed after its retries."""

    type: Literal["structured.error"] = field(default="structured.error", init=False)
    stream_id: str = ""
    seq: int = 0
    code: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token usage, from the provider (``estimated`` false) or counted by tokenwire."""

    type: Literal["usage"] = field(default="usage", init=False)
    stream_id: str = ""
    seq: int = 0
    input_tokens: int
    output_tokens: int
    estimated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """Terminal: the turn produced output (or was stopped on request). The record to persist."""

    type: Literal["done"] = field(default="done", init=False)
    stream_id: str = ""
    seq: int = 0
    answer: str
    """The canonical, post-processed answer (use this, not the concatenated deltas)."""
    status: Literal["completed", "incomplete"]
    partial: bool
    reason: Reason
    model: str | None
    """The model that produced the answer (None when no provider was reached)."""
    route: str
    attempts: int
    """Provider attempts made (retries and fallbacks included)."""
    tier: str | None = None
    """The tier whose provider answered (the chosen one, or a fallback tier)."""
    usage: dict[str, Any] | None = None
    sources: list[str] = field(default_factory=list)
    source_details: list[dict[str, Any]] = field(default_factory=list)
    structured: dict[str, Any] | None = None
    tools_with_results: list[str] = field(default_factory=list)
    """Tools that ran and returned a usable (non-empty) result, each once, first call first."""
    context: dict[str, Any] | None = None
    """For a turn of a conversation: how its history was fitted into the context window
    (what was kept, dropped or summarised, and the token counts); None otherwise."""
    timings: dict[str, float] = field(default_factory=dict)
    """Milliseconds: queued, first_token, stream, post_process, total (and any other stage)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    """Terminal: the turn failed before any visible output was delivered."""

    type: Literal["error"] = field(default="error", init=False)
    stream_id: str = ""
    seq: int = 0
    code: str
    """Why: a :class:`Reason` value for tokenwire's own endings (``timeout_first_token``,
    ``shutdown``, ...), or the cause of an upstream failure (``upstream_auth``,
    ``upstream_rate_limited``, ``upstream_overloaded``, ...; the table is in the README)."""
    message: str
    """Written by tokenwire for the code; never an upstream's own text."""
    retryable: bool
    """True when the same request may succeed if sent again later."""
    attempts: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    retry_after_s: float | None = None
    """Seconds to wait before sending it again, when the upstream said (``Retry-After``)."""


Event = (
    Start
    | Status
    | TextDelta
    | TextDone
    | ToolCall
    | ToolResult
    | StructuredPartial
    | StructuredReset
    | StructuredDone
    | StructuredError
    | Usage
    | Done
    | Error
)
"""Any protocol event."""

TerminalEvent = Done | Error

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__dataclass_fields__["type"].default: cls  # type: ignore[misc]
    for cls in (
        Start,
        Status,
        TextDelta,
        TextDone,
        ToolCall,
        ToolResult,
        StructuredPartial,
        StructuredReset,
        StructuredDone,
        StructuredError,
        Usage,
        Done,
        Error,
    )
}
"""Tag → event class, for decoding."""

TERMINAL_TYPES = frozenset({"done", "error"})


def is_terminal(event: Event) -> bool:
    """True for the event that ends a stream."""
    return event.type in TERMINAL_TYPES
