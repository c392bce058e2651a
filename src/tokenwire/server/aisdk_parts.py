"""The AI SDK's UI message stream, sans-I/O: tokenwire events in, UI message chunks out.

The Vercel AI SDK (v5, ``x-vercel-ai-ui-message-stream: v1``) reads an answer as SSE ``data:``
lines, each one JSON "UI message chunk" (``uiMessageChunkSchema`` in the ``ai`` package), ending
with ``data: [DONE]``; ``useChat`` and ``readUIMessageStream`` assemble the chunks into one
assistant message. One turn maps onto it so::

    start               → start (messageId, messageMetadata: streamId, route, model), start-step
    text.delta          → text-start (before the first), text-delta
    text.done           → text-end
    tool.call           → tool-input-available (a dynamic tool: the client needs no definition)
    tool.result         → tool-output-available | tool-output-error
    structured.partial  → data-structured, id "structured": {"state": "streaming", "object"}
    structured.reset    → the same part replaced: {"state": "streaming", "object": null,
                          "attempt"} (a re-ask starts the object over)
    structured.done     → the same part replaced: {"state": "done", "object", "schema", "valid"}
    structured.error    → the same part replaced: {"state": "error", "object": null, "error"}
    done                → source-url | source-document per source; error when the answer is
                          partial; finish-step; finish (messageMetadata: finishReason, reason,
                          status, partial, usage, ...)
    error               → error, finish-step, finish
    status, usage       → nothing (usage arrives in finish's messageMetadata)

Honest ends: a turn that failed, or whose answer was cut short (a deadline, the upstream, a
cancel, a shutdown), always sends an ``error`` chunk before ``finish`` — ``useChat`` then shows
status ``error`` and keeps the partial text — never a ``finish`` alone.

Every chunk carries only the keys that ai 5.0.0's *strict* chunk schema allows (later 5.x
versions accept more, e.g. ``finish.finishReason``, which would make 5.0.x clients reject the
stream); so the finish reason travels in ``messageMetadata``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..protocol import (
    Done,
    Error,
    Event,
    Reason,
    SSEDecoder,
    Start,
    StructuredDone,
    StructuredError,
    StructuredPartial,
    StructuredReset,
    TextDelta,
    TextDone,
    ToolCall,
    ToolResult,
    decode_event,
)

UIChunk = dict[str, Any]
"""One UI message chunk (a JSON object with its ``type``)."""

UI_MESSAGE_STREAM_HEADER = "x-vercel-ai-ui-message-stream"
"""The response header that tells the AI SDK which stream protocol the body speaks (``v1``)."""

TEXT_ID = "text-1"
"""The id of the answer's text part (a turn has one)."""

STRUCTURED_PART = "data-structured"
STRUCTURED_ID = "structured"
"""The data part of the structured channel. The SDK replaces a data part in place when another
arrives with the same type and id: partial objects, then the final one, make one part."""

DONE_FRAME = b"data: [DONE]\n\n"
HEARTBEAT_FRAME = b": keep-alive\n\n"

_FINISH_REASONS = {
    Reason.STOP: "stop",
    Reason.LENGTH: "length",
    Reason.CONTENT_FILTER: "content-filter",
    Reason.CANCELLED: "other",
    Reason.CLIENT_GONE: "other",
    Reason.SHUTDOWN: "other",
}
"""tokenwire's reasons in the SDK's finish-reason vocabulary (anything else: ``error``)."""

_CUT_SHORT = {
    Reason.CANCELLED: "the turn was cancelled",
    Reason.CLIENT_GONE: "the client that started the turn disconnected",
    Reason.SHUTDOWN: "the server shut down",
    Reason.TIMEOUT_FIRST_TOKEN: "no token arrived before the first-token deadline",
    Reason.TIMEOUT_IDLE: "the upstream went quiet for longer than the idle deadline",
    Reason.TIMEOUT_TOTAL: "the turn ran past its total deadline",
    Reason.UPSTREAM_ERROR: "the upstream failed",
    Reason.UPSTREAM_TRUNCATED: "the upstream stream ended without its end marker",
    Reason.WORKER_LOST: "the worker running the turn was lost",
    Reason.LOG_UNAVAILABLE: "the turn's events could not be written to the event log",
}


class UIMessageTranslator:
    """One turn's events, in order, to the UI message chunks of its assistant message.

    ``message_id``: the id the message gets (``start.messageId``); None: the stream id, so
    the message a client keeps is named like the stream it can resume. Feed every event through
    the terminal one; :attr:`finished` is then true and ``data: [DONE]`` may follow.
    """

    def __init__(self, *, message_id: str | None = None) -> None:
        self._message_id = message_id
        self._text_open = False
        self._tool_calls: set[str] = set()
        self._structured: str | None = None
        """The state of the structured data part sent last (None: none sent)."""
        self.finished = False

    def feed(self, event: Event) -> list[UIChunk]:
        """The chunks ``event`` adds to the message (often none, e.g. for ``status``)."""
        if self.finished:
            raise ValueError(f"{event.type!r} after the terminal event")
        match event:
            case Start():
                return self._start(event)
            case TextDelta():
                return self._delta(event.delta)
            case TextDone():
                return self._close_text()
            case ToolCall():
                return self._tool_call(event)
            case ToolResult():
                return self._tool_result(event)
            case StructuredPartial():
                return self._structured_part("streaming", {"object": event.data})
            case StructuredReset():
                restart = {"object": None, "attempt": event.attempt}
                return self._structured_part("streaming", restart)
            case StructuredDone():
                body = {"object": event.data, "schema": event.schema, "valid": event.valid}
                return self._structured_part("done", body)
            case StructuredError():
                error = {"code": event.code, "message": event.message}
                return self._structured_part("error", {"object": None, "error": error})
            case Done():
                return self._done(event)
            case Error():
                return self._error(event)
        return []

    def _start(self, event: Start) -> list[UIChunk]:
        metadata: dict[str, Any] = {
            "streamId": event.stream_id,
            "route": event.route,
            "model": event.model,
        }
        if event.conversation_id is not None:
            metadata["conversationId"] = event.conversation_id
        start = {
            "type": "start",
            "messageId": self._message_id or event.stream_id,
            "messageMetadata": metadata,
        }
        return [start, {"type": "start-step"}]

    def _delta(self, delta: str) -> list[UIChunk]:
        if not delta:
            return []
        chunks: list[UIChunk] = []
        if not self._text_open:
            self._text_open = True
            chunks.append({"type": "text-start", "id": TEXT_ID})
        chunks.append({"type": "text-delta", "id": TEXT_ID, "delta": delta})
        return chunks

    def _close_text(self) -> list[UIChunk]:
        if not self._text_open:
            return []
        self._text_open = False
        return [{"type": "text-end", "id": TEXT_ID}]

    def _tool_call(self, event: ToolCall) -> list[UIChunk]:
        self._tool_calls.add(event.call_id)
        try:
            arguments: Any = orjson.loads(event.arguments) if event.arguments else {}
        except orjson.JSONDecodeError:
            arguments = event.arguments  # what the model wrote, as it wrote it
        return [
            {
                "type": "tool-input-available",
                "toolCallId": event.call_id,
                "toolName": event.name,
                "input": arguments,
                "dynamic": True,
            }
        ]

    def _tool_result(self, event: ToolResult) -> list[UIChunk]:
        if event.call_id not in self._tool_calls:
            # The SDK refuses an output for a call it has not seen (it throws).
            return []
        self._tool_calls.discard(event.call_id)  # tokenwire ran it: not the client's to run
        if event.ok:
            return [
                {
                    "type": "tool-output-available",
                    "toolCallId": event.call_id,
                    "output": event.summary,
                    "dynamic": True,
                }
            ]
        return [
            {
                "type": "tool-output-error",
                "toolCallId": event.call_id,
                "errorText": event.summary,
                "dynamic": True,
            }
        ]

    def _structured_part(self, state: str, body: Mapping[str, Any]) -> list[UIChunk]:
        self._structured = state
        data = {"state": state, **body}
        return [{"type": STRUCTURED_PART, "id": STRUCTURED_ID, "data": data}]

    def _unsettled_structured(self, code: str) -> list[UIChunk]:
        """A structured part still streaming when the turn ends is settled as an error: the
        object it holds was never completed, and must not look as if it might still be."""
        if self._structured != "streaming":
            return []
        error = {"code": code, "message": "the turn ended before the structured object did"}
        return self._structured_part("error", {"object": None, "error": error})

    def _done(self, done: Done) -> list[UIChunk]:
        chunks = self._close_text()
        chunks += source_chunks(done.sources, done.source_details)
        structured = done.structured or {}
        chunks += self._unsettled_structured(str(structured.get("status") or done.reason.value))
        if done.partial:
            why = _CUT_SHORT.get(done.reason, done.reason.value)
            text = f"{done.reason.value}: the answer is incomplete ({why})"
            chunks.append({"type": "error", "errorText": text})
        finish_reason = _FINISH_REASONS.get(done.reason, "error")
        if finish_reason == "stop" and self._tool_calls:
            finish_reason = "tool-calls"  # calls left for the client (no result from tokenwire)
        metadata: dict[str, Any] = {
            "finishReason": finish_reason,
            "reason": done.reason.value,
            "status": done.status,
            "partial": done.partial,
            "model": done.model,
            "attempts": done.attempts,
        }
        if done.usage is not None:
            metadata["usage"] = _usage(done.usage)
        return self._finish(chunks, metadata)

    def _error(self, error: Error) -> list[UIChunk]:
        chunks = self._close_text()
        chunks += self._unsettled_structured(error.code)
        text = error.message if error.message == error.code else f"{error.code}: {error.message}"
        chunks.append({"type": "error", "errorText": text})
        metadata = {
            "finishReason": "error",
            "reason": error.code,
            "status": "failed",
            "retryable": error.retryable,
            "attempts": error.attempts,
        }
        if error.retry_after_s is not None:
            metadata["retryAfter"] = error.retry_after_s  # seconds, as the upstream asked
        return self._finish(chunks, metadata)

    def _finish(self, chunks: list[UIChunk], metadata: dict[str, Any]) -> list[UIChunk]:
        self.finished = True
        chunks.append({"type": "finish-step"})
        chunks.append({"type": "finish", "messageMetadata": metadata})
        return chunks


def source_chunks(
    sources: Sequence[str], details: Sequence[Mapping[str, Any]] = ()
) -> list[UIChunk]:
    """``done.sources`` (enriched by the ``source_details`` naming the same id or url) as
    source parts: ``source-url`` when the source has a URL (it is one, or its details give
    one), else ``source-document``. Details no source names are added after, once each."""
    chunks: list[UIChunk] = []
    seen: set[str] = set()
    used: set[int] = set()
    for source in sources:
        if not isinstance(source, str) or not source or source in seen:
            continue
        index, detail = _detail_for(source, details)
        if index is not None:
            used.add(index)
        seen.add(source)
        chunks.append(_source_chunk(source, detail))
    for index, detail in enumerate(details):
        if index in used or not isinstance(detail, Mapping):
            continue
        ident = _str(detail.get("id")) or _str(detail.get("url"))
        if ident is None or ident in seen:
            continue
        seen.add(ident)
        chunks.append(_source_chunk(ident, detail))
    return chunks


def _detail_for(
    source: str, details: Sequence[Mapping[str, Any]]
) -> tuple[int | None, Mapping[str, Any]]:
    for index, detail in enumerate(details):
        if isinstance(detail, Mapping) and source in (detail.get("id"), detail.get("url")):
            return index, detail
    return None, {}


def _source_chunk(source_id: str, detail: Mapping[str, Any]) -> UIChunk:
    url = _str(detail.get("url")) or (source_id if _is_url(source_id) else None)
    title = _str(detail.get("title"))
    if url is not None:
        chunk: UIChunk = {"type": "source-url", "sourceId": source_id, "url": url}
        if title is not None:
            chunk["title"] = title
        return chunk
    media_type = _str(detail.get("media_type")) or _str(detail.get("mediaType"))
    chunk = {
        "type": "source-document",
        "sourceId": source_id,
        "mediaType": media_type or "text/plain",
        "title": title or source_id,
    }
    filename = _str(detail.get("filename"))
    if filename is not None:
        chunk["filename"] = filename
    return chunk


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """tokenwire's usage in the SDK's names (``LanguageModelUsage``)."""
    inputs, outputs = usage.get("input_tokens"), usage.get("output_tokens")
    out: dict[str, Any] = {"inputTokens": inputs, "outputTokens": outputs}
    if isinstance(inputs, int) and isinstance(outputs, int):
        out["totalTokens"] = inputs + outputs
    out["estimated"] = bool(usage.get("estimated", False))
    return out


def encode_chunk(chunk: UIChunk) -> bytes:
    """One chunk as an SSE frame. orjson escapes every control character, so the JSON is one
    ``data:`` line whatever the text holds."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class UIMessageTranscoder:
    """tokenwire's SSE bytes in (``POST /v1/streams`` framing), the AI SDK's SSE bytes out.

    Feed it what the event stream writes, split anywhere; each call returns the bytes to write
    instead: the chunks of the events completed so far, ``data: [DONE]`` right after the
    terminal event's, and a keep-alive comment for a heartbeat.
    """

    def __init__(self, translator: UIMessageTranslator) -> None:
        self.translator = translator
        self._decoder = SSEDecoder()
        self._done_sent = False

    def feed(self, data: bytes) -> bytes:
        comments = self._decoder.comments
        frames: list[bytes] = []
        for message in self._decoder.feed(data):
            for chunk in self.translator.feed(decode_event(message.data)):
                frames.append(encode_chunk(chunk))
        if self.translator.finished and not self._done_sent:
            self._done_sent = True
            frames.append(DONE_FRAME)
        if not frames and self._decoder.comments > comments:
            return HEARTBEAT_FRAME
        return b"".join(frames)
