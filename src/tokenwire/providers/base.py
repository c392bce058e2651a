"""The provider interface: what every upstream adapter yields, and how it fails.

A provider turns one :class:`GenerationRequest` into an async iterator of chunks. The contract
every adapter keeps, and the engine relies on:

- :class:`Begin` first, once the upstream accepted the request (HTTP headers in, the local model
  acquired); time before it is queueing.
- then :class:`TextChunk`, :class:`ToolCallChunk` and :class:`UsageChunk` in upstream order;
- :class:`Finish` last, and *only* when the upstream's own end marker arrived (OpenAI's
  ``[DONE]``, Anthropic's ``message_stop``, the local model's normal return). An iterator that
  ends without :class:`Finish` was truncated, and the engine says so (``upstream_truncated``).
- failures raise :class:`ProviderError` (foreign exceptions are translated at the adapter's
  edge), with ``code`` naming the cause (``providers/failures.py``), ``retryable`` saying
  whether the same request may succeed if sent again, and a ``message`` written by tokenwire;
  the upstream's own text is only logged, redacted (:func:`upstream_failure`);
- closing the iterator early (``aclose()``, or cancelling the task iterating it) aborts the
  upstream: the HTTP connection is closed, the local model stops within one token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from .failures import FAILURES, FailureCode, failure_code, redact

logger = logging.getLogger("tokenwire.providers")

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and its arguments' JSON Schema (an
    object schema). Providers send it in their vendor's format (OpenAI ``tools``, Anthropic
    ``tools``, the local model's prompt and grammar)."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A call the model made, as the conversation carries it back to the model afterwards:
    ``arguments`` is the JSON text the model wrote."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the conversation. An ``assistant`` message may carry the ``tool_calls``
    the model made (its ``content`` is the text it wrote before them, often empty); a ``tool``
    message is the result of one call: ``tool_call_id`` names the call, ``name`` the tool,
    ``content`` the result as text (JSON)."""

    role: Role
    content: str
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRequest:
    """What a provider is asked to generate."""

    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    script: Mapping[str, Any] | None = None
    """Only for the scripted provider: tokens, delays and faults (see ``scripted.Script``)."""
    json_schema: Mapping[str, Any] | None = None
    """Constrained output (an extraction call, or a ``response_format``-style request): the
    output must be JSON matching this schema. Providers constrain decoding where they can (the
    local model's llguidance token masks over the schema with decoder bounds added,
    ``output/bounds.py``; OpenAI's ``response_format``); the others rely on the prompt, and the
    caller validates either way. A local call cut by ``max_tokens`` finishes ``length``."""
    continues: tuple[Message, ...] = ()
    """The exchange a constrained call reads, when it follows one (sequential extraction): the
    answering call's messages, then the answer as an assistant message. The local provider
    then writes its prompt as a continuation of that transcript, so llama.cpp reuses the
    prefix it evaluated for the answer; other providers read ``messages`` alone."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tools: tuple[ToolSpec, ...] = ()
    """Tools the model may call in this call (none: it can only answer)."""
    tool_choice: Literal["auto", "required"] = "auto"
    """``auto``: the model decides to call tools or answer; ``required``: it must call one (a
    route that always looks something up first). Ignored without ``tools``."""
    step: int = 1
    """Which call of the turn's tool loop this is: 1 first; each round of tool results makes
    the next call ``step + 1``."""
    attempt: int = 1
    """The turn's attempt number: 1 for its first upstream call, counting every retry and
    fallback after it."""


@dataclass(frozen=True, slots=True)
class Begin:
    """The upstream accepted the request and generation starts."""


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallChunk:
    """A piece of a tool call; pieces with the same ``index`` belong to one call."""

    index: int
    call_id: str | None = None
    name: str | None = None
    arguments_delta: str = ""


@dataclass(frozen=True, slots=True)
class UsageChunk:
    input_tokens: int
    output_tokens: int
    estimated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceChunk:
    """A source backing the answer, as the upstream reports it (a provider's own citations,
    retrieval metadata): ``url`` or ``id`` names it; the rest describes it."""

    url: str | None = None
    id: str | None = None
    title: str | None = None
    snippet: str | None = None
    origin: str | None = None
    """Where it came from (``retrieval``, ``tool:<name>``, ``provider``, ...)."""
    cited: bool = False
    """The answer cites it (a retrieved passage whose ``[n]`` marker the answer has)."""


@dataclass(frozen=True, slots=True)
class Finish:
    """The upstream's end marker arrived; ``reason`` is why the model stopped."""

    reason: FinishReason = "stop"


ProviderChunk = Begin | TextChunk | ToolCallChunk | SourceChunk | UsageChunk | Finish


class ProviderError(Exception):
    """An upstream failure, translated at the adapter's edge.

    ``code`` names the cause (a :class:`~.failures.FailureCode`: ``upstream_auth``,
    ``upstream_rate_limited``, ``upstream_overloaded``, ...; older short words such as
    ``connect`` are read through the table). ``message`` is tokenwire's own sentence for that
    cause, the only text a client may see. ``detail`` is what the upstream or the adapter said,
    redacted (:func:`~.failures.redact`): for the server log, never for a client.

    ``retryable``: the same request may succeed if sent again (the table's answer for the code
    unless the adapter knows better). ``status`` is the upstream HTTP status if any;
    ``retry_after`` the seconds the upstream asked to wait (``Retry-After``).
    """

    def __init__(
        self,
        detail: str,
        *,
        retryable: bool | None = None,
        code: str = FailureCode.ERROR,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        kind = FAILURES[failure_code(code)]
        super().__init__(kind.message)
        self.code: FailureCode = kind.code
        self.message = kind.message
        self.detail = redact(detail)
        self.retryable = kind.retryable if retryable is None else retryable
        self.status = status
        self.retry_after = retry_after


def upstream_failure(
    provider: str,
    code: FailureCode,
    detail: str,
    *,
    status: int | None = None,
    retry_after: float | None = None,
    retryable: bool | None = None,
) -> ProviderError:
    """The error for a failure of ``provider``'s upstream, with the upstream's own words
    (``detail``) logged, redacted, on ``tokenwire.providers`` at warning level. Adapters raise
    what this returns."""
    error = ProviderError(
        detail, retryable=retryable, code=code, status=status, retry_after=retry_after
    )
    logger.warning(
        "provider %s failed: %s (status %s, retryable %s): %s",
        provider,
        error.code.value,
        status if status is not None else "-",
        error.retryable,
        error.detail,
    )
    return error


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    reachable: bool
    detail: str


@runtime_checkable
class Provider(Protocol):
    """An upstream adapter. ``name`` is its key in the config; ``model`` what it runs."""

    name: str
    kind: str
    model: str

    async def start(self) -> None:
        """Get ready (load a model, open a pool). Called once at startup; stream() works without
        it, paying the cost on first use instead."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderChunk]:
        """Generate; see the module docstring for the contract."""
        ...

    async def check(self) -> ProviderHealth:
        """Whether the upstream is reachable now (cheap; used by ``tokenwire providers``)."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections, threads and models."""
        ...
