"""A reader's place in one stream, kept across connections. Sans-I/O: bytes or frames in,
events out.

Every connection to a stream (the POST that started it, each ``GET .../events`` that resumed it,
each WebSocket ``resume``) feeds the same :class:`StreamCursor`. It passes each event on exactly
once and in order: a replay's repeats (``seq`` at or below the last one delivered) are dropped,
and a gap is a :class:`ServerProtocolError` rather than silently lost text. This is the whole of
the client's no-gap, no-duplicate guarantee; the drivers only decide where to reconnect.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..protocol import EVENT_TYPES, Done, Error, Event, SSEDecoder, decode_event
from ..protocol.errors import RemoteProtocolError
from .errors import ServerProtocolError


class StreamCursor:
    """Where a reader is in one stream: ``stream_id`` (None until the server named it),
    ``last_seq`` (the last event delivered, what a resume sends as ``Last-Event-ID``) and
    ``terminal`` (the ``done`` or ``error`` event, once delivered)."""

    def __init__(self, stream_id: str | None = None, *, after_seq: int = 0) -> None:
        self.stream_id = stream_id
        self.last_seq = after_seq
        self.terminal: Done | Error | None = None
        self._decoder = SSEDecoder()

    @property
    def finished(self) -> bool:
        """True once the terminal event was delivered: nothing follows it."""
        return self.terminal is not None

    def new_connection(self) -> None:
        """Forget the bytes of the previous connection (an SSE frame it cut in half)."""
        self._decoder = SSEDecoder()

    def feed_sse(self, chunk: bytes) -> list[Event]:
        """The new events in a chunk of an SSE body (split anywhere)."""
        try:
            messages = self._decoder.feed(chunk)
        except RemoteProtocolError as exc:
            raise ServerProtocolError(str(exc)) from exc
        events: list[Event] = []
        for message in messages:
            try:
                data = orjson.loads(message.data)
            except orjson.JSONDecodeError as exc:
                raise ServerProtocolError(f"event is not valid JSON: {exc}") from exc
            if not isinstance(data, dict):
                raise ServerProtocolError("event is not a JSON object")
            event = self.feed_json(data)
            if event is not None:
                events.append(event)
        return events

    def feed_json(self, data: dict[str, Any]) -> Event | None:
        """The event a parsed JSON object carries, or None when it is a repeat, or of a type
        this client does not know (a newer server's): that one's ``seq`` still counts, so a
        later resume stays exact."""
        seq = data.get("seq")
        stream_id = data.get("stream_id")
        if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(stream_id, str):
            raise ServerProtocolError(f"event without a valid seq or stream_id: {data!r:.200}")
        if not self._advance(stream_id, seq):
            return None
        if data.get("type") not in EVENT_TYPES:
            return None
        try:
            event = decode_event(data)
        except RemoteProtocolError as exc:
            raise ServerProtocolError(str(exc)) from exc
        if isinstance(event, Done | Error):
            self.terminal = event
        return event

    def _advance(self, stream_id: str, seq: int) -> bool:
        if self.stream_id is None:
            self.stream_id = stream_id
        elif stream_id != self.stream_id:
            raise ServerProtocolError(
                f"an event of stream {stream_id!r} arrived on stream {self.stream_id!r}"
            )
        if seq <= self.last_seq:
            return False
        if self.terminal is not None:
            raise ServerProtocolError(f"event {seq} after the terminal event")
        if seq != self.last_seq + 1:
            raise ServerProtocolError(f"event {seq} follows event {self.last_seq}: a gap")
        self.last_seq = seq
        return True
