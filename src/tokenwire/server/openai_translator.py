"""Sans-I/O: a turn's events → OpenAI's Chat Completions responses.

A :class:`ChunkTranslator` turns a turn's events into ``chat.completion.chunk`` objects;
:func:`completion` builds the non-streamed ``chat.completion``; :func:`failure` says which HTTP
status and OpenAI error object a turn that did not produce a whole answer gets. Dicts in, dicts
out (and :func:`encode_frames`, their bytes): the driver, :mod:`.openai_response`, only waits
and writes. Requests are translated by :mod:`.openai_request`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ..protocol import Done, Error, Event, Reason, Start, TextDelta
from ..providers.failures import FailureCode

DONE: Final = "[DONE]"
"""The frame that ends a stream that completed (``data: [DONE]``)."""

Frame = dict[str, Any] | str
"""What a stream sends: a JSON object (a chunk or an error) or :data:`DONE`."""

_FINISH_REASONS: Final = {
    Reason.STOP: "stop",
    Reason.LENGTH: "length",
    Reason.CONTENT_FILTER: "content_filter",
}
"""The endings OpenAI has a ``finish_reason`` for: the whole answer, as the model ended it."""

_FAILURE_STATUS: Final[dict[str, int]] = {
    Reason.CANCELLED: 499,
    Reason.CLIENT_GONE: 499,
    Reason.SHUTDOWN: 503,
    Reason.TIMEOUT_FIRST_TOKEN: 504,
    Reason.TIMEOUT_IDLE: 504,
    Reason.TIMEOUT_TOTAL: 504,
    Reason.UPSTREAM_ERROR: 502,
    Reason.UPSTREAM_TRUNCATED: 502,
    Reason.WORKER_LOST: 502,
    Reason.LOG_UNAVAILABLE: 503,
    FailureCode.AUTH: 502,
    FailureCode.QUOTA: 502,
    FailureCode.RATE_LIMITED: 429,
    FailureCode.OVERLOADED: 503,
    FailureCode.BAD_REQUEST: 400,
    FailureCode.NOT_FOUND: 502,
    FailureCode.UNAVAILABLE: 502,
    FailureCode.TIMEOUT: 504,
    FailureCode.INVALID: 502,
}
"""A turn without a whole answer, as an HTTP status (anything else: 502). 499 ("client closed
request", as gRPC's CANCELLED maps to HTTP): stopped on request, not worth retrying. An upstream
that refused tokenwire's own credentials or quota is a 502, never a 401 or a 429: the caller's
key is fine and nothing the caller does will help; ``x-should-retry`` says whether to retry."""


def completion_id(stream_id: str) -> str:
    """The ``id`` of every chunk (and of the completion) of a turn."""
    return "chatcmpl-" + stream_id


def error_object(
    message: str, *, kind: str, code: str | None, param: str | None = None, **extra: Any
) -> dict[str, Any]:
    """``{"error": {...}}`` in OpenAI's shape: ``kind`` is its ``type``; ``extra``: more
    fields (``tokenwire``)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code, **extra}}


def error_type(status: int) -> str:
    """OpenAI's ``type`` for an error status."""
    if status == 499:
        return "cancelled"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"


def whole(terminal: Done | Error) -> bool:
    """True when the turn produced the whole answer (``stop``, ``length``, ``content_filter``):
    the only endings answered like OpenAI's own successes."""
    return isinstance(terminal, Done) and terminal.reason in _FINISH_REASONS


def extension(terminal: Done | Error) -> dict[str, Any]:
    """The ``tokenwire`` object: which stream this was, and how it really ended."""
    if isinstance(terminal, Error):
        return {
            "stream_id": terminal.stream_id,
            "status": "failed",
            "reason": terminal.code,
            "partial": False,
            "retryable": terminal.retryable,
            "retry_after_s": terminal.retry_after_s,
        }
    usage = terminal.usage or {}
    return {
        "stream_id": terminal.stream_id,
        "status": terminal.status,
        "reason": terminal.reason.value,
        "partial": terminal.partial,
        "model": terminal.model,
        "usage_estimated": bool(usage.get("estimated", False)),
    }


def usage_object(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """OpenAI's ``usage`` from tokenwire's (zeros when no provider was reached)."""
    prompt = int((usage or {}).get("input_tokens", 0))
    completion_tokens = int((usage or {}).get("output_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


@dataclass(frozen=True, slots=True)
class Failure:
    """How a turn without a whole answer is answered when no byte of the response was sent."""

    status: int
    body: dict[str, Any]
    retryable: bool
    """Sent as ``x-should-retry`` (which the OpenAI SDKs obey)."""
    retry_after_s: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        headers = {"x-should-retry": "true" if self.retryable else "false"}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


def failure(terminal: Done | Error, *, with_answer: bool = True) -> Failure:
    """The HTTP answer for a turn that did not produce a whole answer: 502 upstream failures,
    504 deadlines, 429 and 503 an upstream's rate limit and overload, 503 shutdown (each of
    those three with ``Retry-After``), 400 a request the upstream refused, 499 cancelled. The
    error object's ``code`` is tokenwire's (a reason or an upstream failure's cause) and its
    ``message`` tokenwire's words; its ``tokenwire`` member is :func:`extension`, plus (with
    ``with_answer``) the partial ``answer`` and ``usage``, so nothing produced is lost."""
    ext = extension(terminal)
    retry_after: float | None = None
    if isinstance(terminal, Error):
        code, message, retryable = terminal.code, terminal.message, terminal.retryable
        retry_after = terminal.retry_after_s
    else:
        code = terminal.reason.value
        message = f"the turn ended before its answer was complete ({code})"
        retryable = terminal.reason not in (Reason.CANCELLED, Reason.CLIENT_GONE)
        if with_answer:
            ext["answer"] = terminal.answer
            ext["usage"] = usage_object(terminal.usage)
    status = _FAILURE_STATUS.get(code, 502)
    body = error_object(message, kind=error_type(status), code=code, tokenwire=ext)
    wait: int | None = None
    if retryable and status in (429, 503):
        wait = max(1, math.ceil(retry_after)) if retry_after is not None else 1
    return Failure(status, body, retryable, wait)


def completion(done: Done, *, model: str, created: int) -> dict[str, Any]:
    """The non-streamed ``chat.completion`` of a whole answer (the canonical ``done.answer``)."""
    return {
        "id": completion_id(done.stream_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": done.answer, "refusal": None},
                "logprobs": None,
                "finish_reason": _FINISH_REASONS.get(done.reason),
            }
        ],
        "usage": usage_object(done.usage),
        "tokenwire": extension(done),
    }


def opening_event(events: Iterable[Event]) -> Event | None:
    """The first event that says how the turn goes (past ``start`` and ``status``), if any."""
    return next((e for e in events if e.type not in ("start", "status")), None)


class ChunkTranslator:
    """One turn's events → ``chat.completion.chunk`` objects, in order.

    The first chunk carries ``role: "assistant"``; each ``text.delta`` becomes a content
    chunk. A whole answer ends with a chunk holding ``finish_reason`` (``stop``, ``length``,
    ``content_filter``) and the ``tokenwire`` extension, then the usage chunk (``choices: []``,
    with ``include_usage``), then :data:`DONE`. Any other ending never looks like one: no
    chunk says ``finish_reason`` (the choice never claims to have finished); the usage chunk
    (for a partial ``done``: what was used is still worth knowing) is followed by an error
    object (``{"error": {...}}``, as OpenAI sends mid-stream; the SDKs raise ``APIError`` on
    it) whose ``code`` is the tokenwire reason and whose ``tokenwire`` member says the rest,
    and there is no :data:`DONE`, which means the stream completed.
    """

    def __init__(self, stream_id: str, *, model: str, include_usage: bool) -> None:
        self._id = completion_id(stream_id)
        self._model = model
        self._include_usage = include_usage
        self._created = 0
        self._opened = False
        self.finished = False
        """True once the terminal event was translated."""

    def open(self) -> list[Frame]:
        """The first chunk (``role: "assistant"``), if not sent yet."""
        if self._opened:
            return []
        self._opened = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def feed(self, events: Iterable[Event]) -> list[Frame]:
        """The frames for these events (the next ones of the stream, in order)."""
        frames: list[Frame] = []
        for event in events:
            if isinstance(event, Start):
                self._created = int(event.created_at)
            elif isinstance(event, TextDelta):
                frames += self.open()
                frames.append(self._chunk({"content": event.delta}))
            elif isinstance(event, Done | Error):
                frames += self.open()
                frames += self._end(event)
            # status, usage (done carries it), text.done: nothing to say. structured.* cannot
            # occur (requests with response formats are refused); tool.* are the calls of tools
            # a route runs itself: the client sees their effect in the text, not the calls.
        return frames

    def _end(self, terminal: Done | Error) -> list[Frame]:
        self.finished = True
        frames: list[Frame] = []
        if whole(terminal):
            assert isinstance(terminal, Done)
            frames.append(
                self._chunk({}, finish_reason=_FINISH_REASONS[terminal.reason])
                | {"tokenwire": extension(terminal)}
            )
        if self._include_usage and isinstance(terminal, Done):
            frames.append(self._base() | {"choices": [], "usage": usage_object(terminal.usage)})
        if whole(terminal):
            frames.append(DONE)
        else:
            frames.append(failure(terminal, with_answer=False).body)
        return frames

    def _base(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "system_fingerprint": None,
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        chunk = self._base()
        chunk["choices"] = [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        if self._include_usage:
            chunk["usage"] = None
        return chunk


def model_list(routes: Iterable[str], *, created: int) -> dict[str, Any]:
    """``GET /v1/models``: every route, as a model."""
    return {"object": "list", "data": [model_object(r, created=created) for r in sorted(routes)]}


def model_object(route: str, *, created: int) -> dict[str, Any]:
    return {"id": route, "object": "model", "created": created, "owned_by": "tokenwire"}


def encode_frames(frames: Iterable[Frame]) -> bytes:
    """Frames as SSE ``data:`` lines (the JSON never holds a raw newline)."""
    return b"".join(
        _DONE_BYTES if isinstance(f, str) else b"data: " + orjson.dumps(f) + b"\n\n" for f in frames
    )


_DONE_BYTES: Final = b"data: [DONE]\n\n"
