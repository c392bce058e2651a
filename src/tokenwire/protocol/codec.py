"""JSON form of events: encode for the wire, decode what a peer sent.

Encoding uses orjson, which serialises the frozen event dataclasses directly (no intermediate
dict) and escapes every control character, so an encoded event never contains a raw newline and
can always be one SSE ``data:`` line.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from .errors import RemoteProtocolError
from .events import EVENT_TYPES, Event, Phase, Reason


def encode_event(event: Event) -> bytes:
    """The event as compact JSON bytes (``type`` first)."""
    return orjson.dumps(event)


def encode_event_with(event: Event, **extra: Any) -> bytes:
    """The event's JSON with extra top-level fields first (e.g. a WebSocket ``request_id``)."""
    head = orjson.dumps(extra)
    body = orjson.dumps(event)
    if head == b"{}":
        return body
    return head[:-1] + b"," + body[1:]


def event_to_dict(event: Event) -> dict[str, Any]:
    """The event as a plain dict (as it would decode from its JSON)."""
    parsed: dict[str, Any] = orjson.loads(orjson.dumps(event))
    return parsed


def decode_event(payload: bytes | str | dict[str, Any]) -> Event:
    """Build an event from its JSON (or parsed dict).

    Unknown fields are ignored so that a client keeps working when a newer server adds fields;
    an unknown ``type`` or a missing field is a :class:`RemoteProtocolError`.
    """
    if isinstance(payload, dict):
        data = payload
    else:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise RemoteProtocolError(f"event is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise RemoteProtocolError("event is not a JSON object")
    tag = data.get("type")
    cls = EVENT_TYPES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise RemoteProtocolError(f"unknown event type {tag!r}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name not in data:
            continue
        value = data[f.name]
        if f.name == "reason":
            value = Reason(value)
        elif f.name == "phase":
            value = Phase(value)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"malformed {tag} event: {exc}") from exc
