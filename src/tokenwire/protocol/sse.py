"""Server-Sent Events framing, sans-I/O: an encoder and an incremental decoder.

The decoder follows the WHATWG "event stream interpretation" rules: lines end with CRLF, LF or
a lone CR (also when the CR ends one chunk and the LF starts the next), ``data`` fields join with
"\\n", comments are ignored, and an event still pending when the stream ends is discarded. Feed
it bytes split anywhere; it yields the same messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .codec import encode_event
from .errors import RemoteProtocolError
from .events import Event

_EOL = re.compile(rb"\r\n|\r|\n")

DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
"""A line longer than this is a protocol error: the decoder's memory stays bounded."""


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched SSE event."""

    data: str
    event: str = "message"
    id: str | None = None
    """The stream's last event id when this message was dispatched."""
    retry: int | None = None


TERMINAL_ERROR_EVENT = "turn.error"
"""The SSE event name of the terminal ``error`` event. A browser's ``EventSource`` fires its own
``error`` event when the connection fails; a message named ``error`` would reach the same
listener, and code written for one would misread the other. Only the SSE name differs: the
JSON keeps ``"type": "error"``, as on the WebSocket."""


def sse_event_name(event_type: str) -> str:
    """The ``event:`` field of an event of ``event_type``: the type itself, but ``turn.error``
    for ``error``."""
    return TERMINAL_ERROR_EVENT if event_type == "error" else event_type


def encode_sse_event(event: Event) -> bytes:
    """One protocol event as an SSE frame: ``id: <seq>``, ``event: <name>``, ``data: <json>``;
    the name is the event's type (:func:`sse_event_name`: ``turn.error`` for ``error``)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        event.seq,
        sse_event_name(event.type).encode(),
        encode_event(event),
    )


def encode_sse_retry(milliseconds: int) -> bytes:
    """A ``retry:`` field alone: sets the reader's reconnection delay, dispatches no event."""
    return b"retry: %d\n\n" % milliseconds


def encode_sse_message(
    data: str, *, event: str | None = None, id: str | None = None, retry: int | None = None
) -> bytes:
    """A generic SSE frame; multi-line ``data`` becomes several ``data:`` lines (as specified)."""
    parts: list[str] = []
    if id is not None:
        if any(c in id for c in "\r\n\0"):
            raise ValueError("an SSE id cannot contain CR, LF or NUL")
        parts.append(f"id: {id}\n")
    if event is not None:
        if any(c in event for c in "\r\n"):
            raise ValueError("an SSE event name cannot contain CR or LF")
        parts.append(f"event: {event}\n")
    if retry is not None:
        parts.append(f"retry: {retry}\n")
    for line in _EOL.split(data.encode()):
        parts.append("data: " + line.decode() + "\n")
    parts.append("\n")
    return "".join(parts).encode()


def encode_sse_comment(text: str = "") -> bytes:
    """A comment line (a heartbeat): readers ignore it, proxies see traffic."""
    if any(c in text for c in "\r\n"):
        raise ValueError("an SSE comment cannot contain CR or LF")
    return b": " + text.encode() + b"\n\n" if text else b":\n\n"


class SSEDecoder:
    """Incremental SSE decoder: ``feed(bytes)`` returns the messages completed so far.

    ``comments`` counts comment lines seen (heartbeats), so a caller can tell keep-alive
    traffic from silence without treating it as content.
    """

    def __init__(self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._max_line = max_line_bytes
        self._buffer = b""
        self._skip_lf = False
        self._first_line = True
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self.comments = 0

    @property
    def last_event_id(self) -> str | None:
        """The last ``id`` seen, what a reconnecting client sends as ``Last-Event-ID``."""
        return self._last_id

    @property
    def has_pending(self) -> bool:
        """True while an event (or a partial line) is buffered but not yet dispatched."""
        return bool(self._buffer) or self._has_data or bool(self._event)

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Consume bytes; return every message whose blank line has arrived."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buffer + chunk if self._buffer else chunk
        out: list[SSEMessage] = []
        if b"\r" not in buf:
            lines = buf.split(b"\n")
            self._buffer = lines.pop()
            for line in lines:
                self._line(line, out)
        else:
            pos = 0
            for match in _EOL.finditer(buf):
                self._line(buf[pos : match.start()], out)
                pos = match.end()
                if pos == len(buf) and match.group() == b"\r":
                    self._skip_lf = True
            self._buffer = buf[pos:]
        if len(self._buffer) > self._max_line:
            raise RemoteProtocolError(f"SSE line longer than {self._max_line} bytes")
        return out

    def flush(self) -> list[SSEMessage]:
        """End of stream: per the spec an undispatched event is discarded, so this returns []."""
        self._buffer = b""
        self._data = []
        self._has_data = False
        self._event = ""
        return []

    def _line(self, raw: bytes, out: list[SSEMessage]) -> None:
        if self._first_line:
            self._first_line = False
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
        if not raw:
            self._dispatch(out)
            return
        if raw[:1] == b":":
            self.comments += 1
            return
        line = raw.decode("utf-8", errors="replace")
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)

    def _dispatch(self, out: list[SSEMessage]) -> None:
        if not self._has_data:
            self._event = ""
            return
        out.append(
            SSEMessage(
                data="\n".join(self._data),
                event=self._event or "message",
                id=self._last_id,
                retry=self._retry,
            )
        )
        self._data = []
        self._has_data = False
        self._event = ""
