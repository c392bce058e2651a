"""The Anthropic adapter, through the official ``anthropic`` SDK (streaming Messages API).

Events map to chunks in one place (:meth:`AnthropicProvider._stream`): the response headers →
:class:`Begin`; ``text_delta`` → :class:`TextChunk`; a ``tool_use`` block and its
``input_json_delta`` pieces → :class:`ToolCallChunk` (``index`` counts tool blocks only, from 0);
``message_start`` / ``message_delta`` usage and stop reason are remembered and ``message_stop``
yields :class:`UsageChunk` then :class:`Finish`. A stream that ends, or whose connection breaks,
before ``message_stop`` ends the iterator without :class:`Finish` (``upstream_truncated``).

SDK errors are translated at the edge with the same status table as the OpenAI adapter.
The SDK's own retries are off: the engine decides about retries and fallbacks.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2

from ..config import AnthropicProviderSettings
from .base import (
    Begin,
    Finish,
    FinishReason,
    GenerationRequest,
    ProviderChunk,
    ProviderError,
    ProviderHealth,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)
from .openai import RETRYABLE_ERROR_TYPES, error_for_status, parse_retry_after

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


def translate(exc: anthropic.APIError, *, in_stream: bool) -> ProviderError:
    """An SDK error as a :class:`ProviderError`. ``in_stream``: raised while reading events, where
    the SDK reports an ``event: error`` as an ``APIStatusError`` carrying the 200 of the stream."""
    if isinstance(exc, anthropic.APIStatusError):
        message = exc.api_message or exc.message
        if in_stream:
            return ProviderError(
                message, retryable=exc.type in RETRYABLE_ERROR_TYPES, code="stream_error"
            )
        retry_after = parse_retry_after(exc.response.headers)
        return error_for_status(exc.status_code, message, retry_after)
    if isinstance(exc, anthropic.APIConnectionError):  # APITimeoutError included
        return ProviderError(exc.message, retryable=True, code="connect")
    return ProviderError(exc.message, retryable=False, code="stream_error")


class AnthropicProvider:
    """Streams from the Anthropic Messages API; see the module docstring.

    System messages are joined into ``system=``; ``tool`` messages go as ``user`` turns (the
    request format carries no tool-call ids). The SDK client and its connection pool are made
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
        messages: list[dict[str, str]] = [
            {"role": "assistant" if m.role == "assistant" else "user", "content": m.content}
            for m in request.messages
            if m.role != "system"
        ]
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
        }
        if system:
            params["system"] = system
        if request.temperature is not None:
            # Not a named argument of this SDK version any more; the API still takes it for the
            # models that support it, and says 400 for those that do not.
            params["extra_body"] = {"temperature": request.temperature}
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        return params

    def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderChunk]:
        return self._stream(self.params(request))

    async def _stream(self, params: dict[str, Any]) -> AsyncIterator[ProviderChunk]:
        try:
            events = await self._sdk().messages.create(stream=True, **params)
        except anthropic.APIError as exc:
            raise translate(exc, in_stream=False) from exc
        try:
            yield Begin()
            input_tokens = output_tokens = 0
            finish: FinishReason = "stop"
            tool_index: dict[int, int] = {}  # content block index → tool call index
            try:
                async for event in events:
                    if event.type == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta":
                            if delta.text:
                                yield TextChunk(delta.text)
                        elif delta.type == "input_json_delta" and event.index in tool_index:
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
                raise translate(exc, in_stream=True) from exc
            except httpx2.TransportError:
                return  # a broken body is a truncated one; see the module docstring
            except ValueError as exc:  # the SDK's json.loads of a malformed data line
                raise ProviderError(
                    f"malformed JSON in the stream: {exc}", retryable=False, code="stream_error"
                ) from exc
        finally:
            # Also on an early exit (aclose, cancel): closes the response, so an unfinished
            # body drops its connection and the upstream sees the client leave.
            await events.close()

    async def check(self) -> ProviderHealth:
        try:
            await self._sdk().models.list(limit=1, timeout=CHECK_TIMEOUT_S)
        except anthropic.APIStatusError as exc:
            return ProviderHealth(False, f"HTTP {exc.status_code}: {exc.message}")
        except anthropic.APIError as exc:
            return ProviderHealth(False, f"cannot reach {self._sdk().base_url}: {exc.message}")
        return ProviderHealth(True, f"reachable at {self._sdk().base_url}")
