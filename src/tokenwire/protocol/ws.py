"""WebSocket message schema, sans-I/O.

One socket carries many turns, told apart by the client's ``request_id``.

Client → server (text frames, one JSON object each)::

    {"type": "generate", "request_id": "r1", ...the POST /v1/streams body...}
    {"type": "cancel",   "request_id": "r1"}
    {"type": "resume",   "request_id": "r1", "after_seq": 12}   # + "stream_id": any stream

Server → client: protocol events with ``request_id`` added, and, for a message that could not
be served, ``{"type": "error", "request_id": ..., "code": ..., "message": ...}``.

Every command gets exactly one answer: a ``generate`` its turn's events through the terminal
one, or one ``error`` when the request is refused (``overloaded`` included); a ``cancel`` of a
turn starting or running ends that turn (``done``, partial, reason ``cancelled``), one of a
request that already ended is answered by its terminal event already sent.

Two kinds of failure, two answers: a frame that is not a JSON object cannot be attributed to a
request, so :func:`parse_client_message` raises :class:`FrameError` and the socket is closed
(1007); a well-formed frame with a bad message raises :class:`MessageError`, which answers that
request only and leaves the socket serving the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import RemoteProtocolError

CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_RATE_LIMITED = 4008
"""The client sent commands faster than ``[limits] ws_commands_per_s`` (burst included)."""

MAX_REQUEST_ID_CHARS = 200


class FrameError(RemoteProtocolError):
    """The frame is not a JSON object: the socket must be closed with ``close_code``."""

    def __init__(self, message: str, close_code: int = CLOSE_INVALID_PAYLOAD) -> None:
        super().__init__(message)
        self.close_code = close_code


class MessageError(RemoteProtocolError):
    """A well-formed frame whose message cannot be served; answers ``request_id`` only."""

    def __init__(self, request_id: str | None, code: str, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Generate:
    request_id: str
    body: dict[str, Any]
    """The request fields, exactly as for ``POST /v1/streams``."""


@dataclass(frozen=True, slots=True)
class Cancel:
    request_id: str


@dataclass(frozen=True, slots=True)
class Resume:
    request_id: str
    after_seq: int
    stream_id: str | None = None
    """The stream to follow; None: the one this socket started under ``request_id``."""


ClientMessage = Generate | Cancel | Resume


def parse_client_message(frame: str | bytes) -> ClientMessage:
    """Parse one client frame. Raises :class:`FrameError` or :class:`MessageError`."""
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"frame is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise FrameError("frame is not a JSON object")
    raw_id = data.get("request_id")
    request_id = raw_id if isinstance(raw_id, str) else None
    if request_id is None or not request_id or len(request_id) > MAX_REQUEST_ID_CHARS:
        raise MessageError(
            None, "invalid_request", f"request_id must be a string of 1..{MAX_REQUEST_ID_CHARS}"
        )
    kind = data.get("type")
    if kind == "generate":
        body = {k: v for k, v in data.items() if k not in ("type", "request_id")}
        return Generate(request_id, body)
    if kind == "cancel":
        _reject_extra(data, request_id, {"type", "request_id"})
        return Cancel(request_id)
    if kind == "resume":
        _reject_extra(data, request_id, {"type", "request_id", "after_seq", "stream_id"})
        after = data.get("after_seq", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise MessageError(request_id, "invalid_request", "after_seq must be an integer >= 0")
        stream_id = data.get("stream_id")
        if stream_id is not None and not isinstance(stream_id, str):
            raise MessageError(request_id, "invalid_request", "stream_id must be a string")
        return Resume(request_id, after, stream_id)
    raise MessageError(
        request_id, "invalid_request", f"unknown message type {kind!r} (generate|cancel|resume)"
    )


def encode_request_error(request_id: str | None, code: str, message: str) -> bytes:
    """The server's answer to a message it could not serve."""
    return orjson.dumps(
        {"type": "error", "request_id": request_id, "code": code, "message": message}
    )


def _reject_extra(data: dict[str, Any], request_id: str, allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise MessageError(request_id, "invalid_request", f"unknown fields: {', '.join(extra)}")
