"""The OpenAI-compatible adapter: OpenAI, vLLM, Ollama, llama.cpp server, any ``/chat/completions``
that streams ``data: {chunk}`` lines and ends with ``data: [DONE]``.

This is the relay's hot path, so it skips the vendor SDK: one pooled ``aiohttp`` session per
provider, the body's bytes straight into :class:`~tokenwire.protocol.sse.SSEDecoder`, each
``data:`` parsed once with ``orjson``. How vendor failures become :class:`ProviderError` is one
table, :func:`error_for_status` (the Anthropic adapter shares it), over the causes of
``providers/failures.py``: clients get tokenwire's message for the cause, the log the
upstream's words, redacted.

Tools: a request's ``tools`` go as ``tools`` (``type: function``) with its ``tool_choice``; an
assistant message's calls as ``tool_calls`` and a tool result as a ``tool`` message with its
``tool_call_id`` (:func:`_message`). Streamed ``delta.tool_calls`` become
:class:`ToolCallChunk` pieces by their ``index`` (id and name in a call's first delta, argument
pieces after; parallel calls may interleave).

A connection that breaks in the middle of the body is treated like a body that ends without
``[DONE]``: the iterator ends without :class:`Finish`, and the engine reports
``upstream_truncated`` (what the client saw is all there is; the cause is the same either way).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from ..config import OpenAIProviderSettings
from ..protocol.errors import RemoteProtocolError
from ..protocol.retry import retry_after_seconds
from ..protocol.sse import SSEDecoder
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
    UsageChunk,
    upstream_failure,
)
from .failures import FailureCode, classify

CHECK_TIMEOUT_S = 5.0
_ERROR_BODY_LIMIT = 64 * 1024
_DETAIL_LIMIT = 2000

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def error_for_status(
    provider: str,
    status: int,
    detail: str,
    *vendor_words: str | None,
    retry_after: float | None = None,
) -> ProviderError:
    """The one table from an upstream HTTP status (and the vendor's ``error.type`` /
    ``error.code``, which may say more: ``overloaded_error``, ``insufficient_quota``) to a
    :class:`ProviderError` whose message is tokenwire's; ``detail``, the upstream's own words,
    is only logged, redacted."""
    code = classify(status, *vendor_words)
    return upstream_failure(
        provider, code, f"HTTP {status}: {detail}", status=status, retry_after=retry_after
    )


def stream_error(provider: str, data: str) -> ProviderError:
    """A vendor's error object inside a stream (``data: {"error": {...}}``)."""
    detail, words = vendor_message(data, "an error inside the stream")
    return upstream_failure(provider, classify(None, *words), detail)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    return retry_after_seconds(headers.get("retry-after"))


def vendor_message(body: bytes | str, fallback: str) -> tuple[str, tuple[str | None, ...]]:
    """``(message, (error type, error code))`` from a vendor error body ``{"error": {"message",
    "type", "code"}}``; a body that is not JSON (a proxy's HTML page) is the message itself."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return (text.strip()[:_DETAIL_LIMIT] or fallback), ()
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        words = (_str_or_none(error.get("type")), _str_or_none(error.get("code")))
        return str(error.get("message") or fallback), words
    if isinstance(error, str):
        return error, ()
    return fallback, ()


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


class OpenAIProvider:
    """Streams from an OpenAI-compatible ``/chat/completions``; see the module docstring.

    The connection pool is created on first use in the running event loop and belongs to it;
    :meth:`aclose` releases it.
    """

    kind = "openai"

    def __init__(self, name: str, settings: OpenAIProviderSettings) -> None:
        self.name = name
        self.model = settings.model
        self._settings = settings
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._models_url = settings.base_url.rstrip("/") + "/models"
        headers = {"Accept": "text/event-stream", **settings.headers}
        key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._headers = headers
        # No total or read timeout: the engine owns first-token, idle and total deadlines.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._settings.max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout
            )
        return self._session

    async def start(self) -> None:
        self._pool()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = list(request.stop)
        if request.json_schema is not None:
            # Structured outputs; not "strict", which would demand every property be required.
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "extraction", "schema": dict(request.json_schema)},
            }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": dict(tool.parameters),
                    },
                }
                for tool in request.tools
            ]
            body["tool_choice"] = request.tool_choice
        return body

    def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderChunk]:
        return self._stream(orjson.dumps(self.body(request)))

    async def _stream(self, payload: bytes) -> AsyncIterator[ProviderChunk]:
        try:
            response = await self._pool().post(
                self._url, data=payload, headers={"Content-Type": "application/json"}
            )
        except TimeoutError as exc:  # sock_connect: the connect timeout
            raise upstream_failure(
                self.name, FailureCode.TIMEOUT, f"connecting to {self._url} timed out"
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise upstream_failure(
                self.name, FailureCode.UNAVAILABLE, f"cannot reach {self._url}: {exc!r}"
            ) from exc
        except aiohttp.ClientError as exc:  # an invalid URL and the like: configuration
            raise upstream_failure(
                self.name,
                FailureCode.UNAVAILABLE,
                f"cannot send to {self._url}: {exc!r}",
                retryable=False,
            ) from exc
        complete = False
        try:
            if response.status >= 300:
                raise await self._status_error(response)
            yield Begin()
            decoder = SSEDecoder()
            finish: FinishReason = "stop"
            try:
                async for raw in response.content.iter_any():
                    for message in decoder.feed(raw):
                        data = message.data
                        if data == "[DONE]":
                            complete = True
                            yield Finish(finish)
                            return
                        for chunk in _chunks(self.name, data):
                            if isinstance(chunk, Finish):
                                finish = chunk.reason
                            else:
                                yield chunk
            except RemoteProtocolError as exc:
                raise upstream_failure(self.name, FailureCode.INVALID, str(exc)) from exc
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                return  # a broken body is a truncated one; see the module docstring
            complete = True  # EOF without [DONE]: the connection is clean, the stream truncated
        finally:
            if complete:
                response.release()
            else:
                # Early exit (consumer closed or cancelled us, or an error): drop the
                # connection now so the upstream sees it closed and stops generating.
                response.close()

    async def _status_error(self, response: aiohttp.ClientResponse) -> ProviderError:
        try:
            raw = await response.content.read(_ERROR_BODY_LIMIT)
        except (aiohttp.ClientError, TimeoutError):
            raw = b""
        detail, words = vendor_message(raw, f"HTTP {response.status} {response.reason or ''}")
        return error_for_status(
            self.name,
            response.status,
            detail,
            *words,
            retry_after=parse_retry_after(response.headers),
        )

    async def check(self) -> ProviderHealth:
        timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT_S)
        try:
            async with self._pool().get(self._models_url, timeout=timeout) as response:
                if response.status < 300:
                    return ProviderHealth(True, f"HTTP {response.status} from {self._models_url}")
                return ProviderHealth(False, f"HTTP {response.status} from {self._models_url}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ProviderHealth(False, f"cannot reach {self._models_url}: {exc!r}")


def _message(message: Message) -> dict[str, Any]:
    """One message in the chat-completions shape: an assistant message's tool calls as
    ``tool_calls`` (its content ``None`` when it wrote no text), a tool result with the
    ``tool_call_id`` it answers."""
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ],
        }
    if message.role == "tool" and message.tool_call_id is not None:
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    return {"role": message.role, "content": message.content}


def _chunks(provider: str, data: str) -> list[ProviderChunk]:
    """The chunks in one ``data:`` payload; a :class:`Finish` in it only *records* the reason."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise upstream_failure(
            provider, FailureCode.INVALID, f"malformed JSON in the stream: {data[:200]!r}"
        ) from exc
    if not isinstance(obj, dict):
        raise upstream_failure(
            provider, FailureCode.INVALID, f"unexpected stream data: {data[:200]!r}"
        )
    if "error" in obj:
        raise stream_error(provider, data)
    out: list[ProviderChunk] = []
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            out.append(TextChunk(content))
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            out.append(
                ToolCallChunk(
                    index=call.get("index", 0),
                    call_id=call.get("id"),
                    name=function.get("name"),
                    arguments_delta=function.get("arguments") or "",
                )
            )
        legacy = delta.get("function_call")  # the pre-tools API: one call, index 0
        if legacy:
            out.append(
                ToolCallChunk(
                    index=0, name=legacy.get("name"), arguments_delta=legacy.get("arguments") or ""
                )
            )
        reason = choice.get("finish_reason")
        if reason:
            out.append(Finish(_FINISH.get(reason, "stop")))
    usage = obj.get("usage")
    if usage:
        out.append(
            UsageChunk(
                input_tokens=usage.get("prompt_tokens") or 0,
                output_tokens=usage.get("completion_tokens") or 0,
            )
        )
    return out
