"""Resuming a dropped stream, sans-I/O: which request to send next, what an answer means, how
long to wait. The async and the sync clients are thin loops around :class:`StreamPlan`.

::

    POST /v1/streams (Idempotency-Key) ──200──▶ events … ──terminal──▶ end
         │ no answer                       │ connection lost / body ended early
         ▼                                 ▼
    POST again, same key               GET /v1/streams/{id}/events, Last-Event-ID: <last seq>
    (joins the turn it started)          ──200──▶ the events after it … ──terminal──▶ end
                                         ──410 / 404 / 4xx──▶ ResumeError
                                         ──5xx, 408, 429, dropped again──▶ retry, with backoff

A failure counts against :attr:`ResumePolicy.max_attempts` until an event arrives; then the
count starts over, so a long stream survives any number of drops that each make progress.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import orjson

from ..protocol import Event
from ..protocol.retry import backoff_delay
from .cursor import StreamCursor
from .errors import (
    APIConnectionError,
    APIStatusError,
    ResumeError,
    ServerProtocolError,
    TokenwireError,
)
from .options import ClientOptions

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Answers to a resume worth another try: the server (or a proxy) is restarting or busy."""


@dataclass(frozen=True, slots=True)
class ResumePolicy:
    """How a stream whose connection dropped is resumed."""

    max_attempts: int = 5
    """Reconnections in a row that deliver no event before giving up (0: never resume)."""
    backoff_initial_s: float = 0.25
    """The wait before the first reconnection; it doubles each time (with jitter)."""
    backoff_max_s: float = 4.0

    def __post_init__(self) -> None:
        if self.max_attempts < 0 or self.backoff_initial_s < 0 or self.backoff_max_s < 0:
            raise ValueError("ResumePolicy values cannot be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnection number ``attempt`` (1 for the first)."""
        return backoff_delay(attempt, initial_s=self.backoff_initial_s, max_s=self.backoff_max_s)


@dataclass(frozen=True, slots=True)
class Request:
    """The next request to send for a stream."""

    method: Literal["GET", "POST"]
    url: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None


class StreamPlan:
    """The connections of one stream. Call :meth:`next_request`, send it, then hand over what
    came back: :meth:`on_headers`, then :meth:`feed` for an event stream or :meth:`on_body`
    for any other answer; :meth:`on_drop` when the connection failed or the stream ended
    before its terminal event. The ``on_*`` methods return the seconds to wait before the
    next request, or raise when the stream cannot go on."""

    def __init__(
        self,
        options: ClientOptions,
        policy: ResumePolicy,
        *,
        body: dict[str, Any] | None = None,
        stream_id: str | None = None,
        after_seq: int = 0,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if (body is None) == (stream_id is None):
            raise ValueError("give a request body (a new turn) or a stream_id (an existing one)")
        self.cursor = StreamCursor(stream_id, after_seq=after_seq)
        self.owner = body is not None and not body.get("background", False)
        """True when this stream started its turn (and leaving it early should stop it)."""
        self._options = options
        self._policy = policy
        self._body = body
        self._headers = dict(headers or {})
        for name in [n for n in self._headers if n.lower() == "idempotency-key"]:
            from_header = self._headers.pop(name)
            idempotency_key = idempotency_key or from_header
        self._key = idempotency_key or f"twc-{uuid.uuid4().hex}"
        self._failures = 0
        self._dropped = False
        self._posting = False

    @classmethod
    def turn(
        cls,
        options: ClientOptions,
        policy: ResumePolicy,
        body: dict[str, Any],
        *,
        idempotency_key: str | None,
        headers: Mapping[str, str] | None,
    ) -> StreamPlan:
        """A new turn. Its POST carries an ``Idempotency-Key`` (``idempotency_key``, or a
        random one), so that a POST repeated after losing its answer joins the turn the first
        one started instead of starting another."""
        return cls(options, policy, body=body, idempotency_key=idempotency_key, headers=headers)

    @classmethod
    def follow(
        cls,
        options: ClientOptions,
        policy: ResumePolicy,
        stream_id: str,
        *,
        after_seq: int,
        headers: Mapping[str, str] | None,
    ) -> StreamPlan:
        """An existing stream, read as a viewer from after ``after_seq``."""
        return cls(options, policy, stream_id=stream_id, after_seq=after_seq, headers=headers)

    @property
    def stream_id(self) -> str | None:
        return self.cursor.stream_id

    def next_request(self) -> Request:
        self.cursor.new_connection()
        headers = self._options.request_headers(self._headers)
        headers["Accept"] = "text/event-stream"
        stream_id = self.cursor.stream_id
        self._posting = stream_id is None
        if stream_id is None:
            headers["Idempotency-Key"] = self._key
            return Request("POST", self._options.url("/v1/streams"), headers, self._body)
        headers["Last-Event-ID"] = str(self.cursor.last_seq)
        path = f"/v1/streams/{quote(stream_id, safe='')}/events"
        return Request("GET", self._options.url(path), headers)

    def on_headers(self, status: int, headers: Mapping[str, str]) -> bool:
        """True when the answer is the event stream (pass its body to :meth:`feed`); False:
        read the whole body and pass it to :meth:`on_body`."""
        if status != 200:
            return False
        content_type = headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise ServerProtocolError(f"expected an event stream, got {content_type!r}")
        stream_id = headers.get("x-tokenwire-stream-id")
        if self.cursor.stream_id is None and stream_id:
            self.cursor.stream_id = stream_id
        return True

    def feed(self, chunk: bytes) -> list[Event]:
        """The new events in a chunk of the event stream."""
        events = self.cursor.feed_sse(chunk)
        if events:
            self._failures = 0
        return events

    def on_body(self, status: int, headers: Mapping[str, str], content: bytes) -> float:
        """An answer that is not an event stream: a background turn's 202, or an error."""
        if status == 202 and self._posting:
            stream_id = _accepted_stream_id(content)
            self.cursor.stream_id = stream_id
            return 0.0
        error = APIStatusError.from_response(status, headers, content)
        if not self._dropped:
            raise error
        if status in RETRYABLE_STATUSES:
            return self._failed(error)
        if self._posting:
            raise error
        raise self._resume_error(f"the server refused to resume: {error}") from error

    def on_drop(self, error: APIConnectionError) -> float:
        """The connection failed, or the stream ended before its terminal event."""
        self._dropped = True
        return self._failed(error)

    def _failed(self, error: TokenwireError) -> float:
        self._failures += 1
        if self._failures > self._policy.max_attempts:
            if self.cursor.stream_id is None:
                raise error
            raise self._resume_error(
                f"gave up after {self._policy.max_attempts} reconnections: {error}"
            ) from error
        return self._policy.delay(self._failures)

    def _resume_error(self, message: str) -> ResumeError:
        return ResumeError(
            f"stream {self.cursor.stream_id} could not be resumed after event "
            f"{self.cursor.last_seq}: {message}",
            stream_id=self.cursor.stream_id,
            last_event_id=self.cursor.last_seq,
        )


def _accepted_stream_id(content: bytes) -> str:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise ServerProtocolError("a 202 answer without a JSON body") from exc
    stream_id = body.get("stream_id") if isinstance(body, dict) else None
    if not isinstance(stream_id, str) or not stream_id:
        raise ServerProtocolError("a 202 answer without a stream_id")
    return stream_id
