"""The Anthropic adapter, through the official ``anthropic`` SDK (streaming Messages API).

Events map to chunks in one place (:meth:`AnthropicProvider._stream`): the response headers →
:class:`Begin`; ``text_delta`` → :class:`TextChunk`; a ``tool_use`` block and its
``input_json_delta`` pieces → :class:`ToolCallChunk` (``index`` counts tool blocks only, from 0;
a block that streamed no JSON gets ``{}`` at its ``content_block_stop``);
``message_start`` / ``message_delta`` usage and stop reason are remembered and ``message_stop``
yields :class:`UsageChunk` then :class:`Finish`. A stream that ends, or whose connection breaks,
before ``message_stop`` ends the iterator without :class:`Finish` (``upstream_truncated``).

SDK errors are translated at the edge (:func:`translate`) with the same status table as the
OpenAI adapter; a streamed ``error`` event by its ``error.type`` (``providers/failures.py``).
The SDK's own retries are off: the engine decides about retries and fallbacks.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anthropic
import httpx2

from ..config import AnthropicProviderSettings
from .base import (
    Begin,
    Finish,
    FinishReason,
    GenerationRequest,
    Message,
    ProviderChunk,
    ProviderError,
    ProviderHealth,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    UsageChunk,
    upstream_failure,
)
from .failures import FailureCode, classify, redact
from .openai import error_for_status, parse_retry_after

CHECK_TIMEOUT_S = 5.0

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def translate(provider: str, exc: anthropic.APIError, *, in_stream: bool) -> ProviderError:
    """An SDK error as a :class:`ProviderError` of ``provider``. ``in_stream``: raised while
    reading events, where the SDK reports an ``event: error`` as an ``APIStatusError`` carrying
    the 200 of the stream; its ``error.type`` names the cause (``overloaded_error``,
    ``rate_limit_error``, ``api_error``, ...)."""
    if isinstance(exc, anthropic.APIStatusError):
        detail = exc.api_message or exc.message
        words = (exc.type, exc.error_code)
        if in_stream:
            return upstream_failure(provider, classify(None, *words), f"{exc.type}: {detail}")
        return error_for_status(
            provider,
            exc.status_code,
            detail,
            *words,
            retry_after=parse_retry_after(exc.response.headers),
        )
    if isinstance(exc, anthropic.APITimeoutError):
        return upstream_failure(provider, FailureCode.TIMEOUT, exc.message)
    if isinstance(exc, anthropic.APIConnectionError):
        return upstream_failure(provider, FailureCode.UNAVAILABLE, exc.message)
    return upstream_failure(provider, FailureCode.INVALID, exc.message)


def messages(conversation: Sequence[Message]) -> list[dict[str, Any]]:
    """The non-system messages in the Messages API's shape.

    An assistant message's tool calls become ``tool_use`` blocks after its text (if any), their
    ``input`` the parsed argument JSON (``{}`` when the model wrote something that is not a JSON
    object); a ``tool`` message becomes a ``tool_result`` block of a ``user`` turn. The API wants
    alternating roles, so adjacent messages of one role merge into one turn of content blocks,
    ``tool_result`` blocks first (the API requires them before any text of their turn). A plain
    text message that merges with nothing keeps its string content.
    """
    turns: list[tuple[str, list[Message]]] = []
    for message in conversation:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        if turns and turns[-1][0] == role:
            turns[-1][1].append(message)
        else:
            turns.append((role, [message]))
    out: list[dict[str, Any]] = []
    for role, group in turns:
        if len(group) == 1 and _plain(group[0]):
            out.append({"role": role, "content": group[0].content})
            continue
        blocks = [block for message in group for block in _blocks(message)]
        results = [b for b in blocks if b["type"] == "tool_result"]
        rest = [b for b in blocks if b["type"] != "tool_result"]
        out.append({"role": role, "content": [*results, *rest]})
    return out


def _plain(message: Message) -> bool:
    return message.role != "tool" and not message.tool_calls


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content,
            }
        ]
    # The API refuses empty text blocks; a turn of several blocks does without them.
    text = [{"type": "text", "text": message.content}] if message.content else []
    calls = [
        {"type": "tool_use", "id": call.call_id, "name": call.name, "input": _input(call)}
        for call in message.tool_calls
    ]
    return [*text, *calls]


def _input(call: ToolCallRequest) -> dict[str, Any]:
    try:
        parsed = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class AnthropicProvider:
    """Streams from the Anthropic Messages API; see the module docstring.

    System messages are joined into ``system=``; the others become alternating ``user`` and
    ``assistant`` turns (see :func:`messages`). The SDK client and its connection pool are made
    on first use and released by :meth:`aclose`.
    """

    kind = "anthropic"

    def __init__(self, name: str, settings: AnthropicProviderSettings) -> None:
        self.name = name
        self.model = settings.model
        self._settings = settings
        self._client: anthropic.AsyncAnthropic | None = None

    def _sdk(self) -> anthropic.AsyncAnthropic:
        if self._client is None:
            s = self._settings
            key = os.environ.get(s.api_key_env) if s.api_key_env else None
            # An explicit (even empty) key keeps the SDK from reading credentials of its own
            # from the environment or disk; without a key, no Authorization header at all.
            auth: dict[str, Any] = (
                {"api_key": key}
                if key
                else {"api_key": "", "default_headers": {"Authorization": anthropic.omit}}
            )
            # No read timeout: the engine owns first-token, idle and total deadlines.
            http = anthropic.DefaultAsyncHttpxClient(
                timeout=httpx2.Timeout(None, connect=s.connect_timeout_s),
                limits=httpx2.Limits(
                    max_connections=s.max_connections, max_keepalive_connections=s.max_connections
                ),
            )
            self._client = anthropic.AsyncAnthropic(
                base_url=s.base_url, max_retries=0, http_client=http, **auth
            )
        return self._client

    async def start(self) -> None:
        self._sdk()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def params(self, request: GenerationRequest) -> dict[str, Any]:
        """The keyword arguments given to ``messages.create`` for ``request``."""
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": messages(request.messages),
        }
        if system:
            params["system"] = system
        if request.temperature is not None:
            # Not a named argument of this SDK version any more; the API still takes it for the
            # models that support it, and says 400 for those that do not.
            params["extra_body"] = {"temperature": request.temperature}
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        if request.tools:
            params["tools"] = [
                {
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": dict(tool.parameters),
                }
                for tool in request.tools
            ]
            params["tool_choice"] = {"type": "any" if request.tool_choice == "required" else "auto"}
        return params

    def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderChunk]:
        return self._stream(self.params(request))

    async def _stream(self, params: dict[str, Any]) -> AsyncIterator[ProviderChunk]:
        try:
            events = await self._sdk().messages.create(stream=True, **params)
        except anthropic.APIError as exc:
            raise translate(self.name, exc, in_stream=False) from exc
        try:
            yield Begin()
            input_tokens = output_tokens = 0
            finish: FinishReason = "stop"
            tool_index: dict[int, int] = {}  # content block index → tool call index
            with_arguments: set[int] = set()  # tool blocks whose input JSON has streamed
            try:
                async for event in events:
                    if event.type == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta":
                            if delta.text:
                                yield TextChunk(delta.text)
                        elif delta.type == "input_json_delta" and event.index in tool_index:
                            if delta.partial_json:
                                with_arguments.add(event.index)
                            yield ToolCallChunk(
                                index=tool_index[event.index], arguments_delta=delta.partial_json
                            )
                    elif event.type == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            tool_index[event.index] = len(tool_index)
                            yield ToolCallChunk(
                                index=tool_index[event.index], call_id=block.id, name=block.name
                            )
                    elif event.type == "content_block_stop":
                        if event.index in tool_index and event.index not in with_arguments:
                            # A call without arguments streams no JSON at all: its input is {}.
                            with_arguments.add(event.index)
                            yield ToolCallChunk(index=tool_index[event.index], arguments_delta="{}")
                    elif event.type == "message_start":
                        input_tokens = event.message.usage.input_tokens
                        output_tokens = event.message.usage.output_tokens
                    elif event.type == "message_delta":
                        if event.delta.stop_reason is not None:
                            finish = _FINISH.get(event.delta.stop_reason, "stop")
                        output_tokens = event.usage.output_tokens
                        if event.usage.input_tokens is not None:
                            input_tokens = event.usage.input_tokens
                    elif event.type == "message_stop":
                        yield UsageChunk(input_tokens=input_tokens, output_tokens=output_tokens)
                        yield Finish(finish)
                        return
            except anthropic.APIError as exc:
                raise translate(self.name, exc, in_stream=True) from exc
            except httpx2.TransportError:
                return  # a broken body is a truncated one; see the module docstring
            except ValueError as exc:  # the SDK's json.loads of a malformed data line
                raise upstream_failure(
                    self.name, FailureCode.INVALID, f"malformed JSON in the stream: {exc}"
                ) from exc
        finally:
            # Also on an early exit (aclose, cancel): closes the response, so an unfinished
            # body drops its connection and the upstream sees the client leave.
            await events.close()

    async def check(self) -> ProviderHealth:
        try:
            await self._sdk().models.list(limit=1, timeout=CHECK_TIMEOUT_S)
        except anthropic.APIStatusError as exc:
            return ProviderHealth(False, f"HTTP {exc.status_code}: {redact(exc.message)}")
        except anthropic.APIError as exc:
            reason = redact(exc.message)
            return ProviderHealth(False, f"cannot reach {self._sdk().base_url}: {reason}")
        return ProviderHealth(True, f"reachable at {self._sdk().base_url}")
