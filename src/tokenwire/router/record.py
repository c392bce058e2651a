"""The turn record the router hands to every route, and how fields inside it are addressed.

A record is a plain, JSON-compatible dict: the ``done`` event's JSON fields plus what the
request said about itself. :func:`build_record` makes one; routes may rely on this shape::

    {
      "type": "done", "stream_id": "s_…", "seq": 42,
      "answer": "…",                      # canonical, post-processed text
      "status": "completed" | "incomplete",
      "partial": false,
      "reason": "stop" | "length" | "cancelled" | …,
      "model": "gemma-3-270m" | null,
      "route": "default",                 # the *provider* route of the turn
      "attempts": 1,
      "usage": {"input_tokens": …, "output_tokens": …, "estimated": …} | null,
      "sources": [...], "source_details": [...], "tools_with_results": [...],
      "structured": {"status": "…", "data": {...}, …} | null,
      "timings": {"total": …, …},         # milliseconds
      "conversation_id": "…" | null,      # from the request
      "metadata": {...}                   # the request's metadata ({} when it had none)
    }

``conversation_id`` and ``metadata`` are top-level so a condition can say
``metadata.tenant``. The router only *requires* ``stream_id`` (for the idempotency key); every
other field is read by path, and a missing field simply does not match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..protocol import Done
from ..protocol.codec import event_to_dict

ROUTE_NAME: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""What a route name may look like: it becomes part of an idempotency key and a metric label."""


class _Missing:
    """The value at a path that leads nowhere (distinct from a JSON ``null``)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


def build_record(
    done: Done,
    *,
    conversation_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of a finished turn: ``done``'s JSON fields plus the request's metadata."""
    record = event_to_dict(done)
    record["conversation_id"] = conversation_id
    record["metadata"] = dict(metadata) if metadata else {}
    return record


def idempotency_key(stream_id: str, route: str) -> str:
    """``<stream_id>:<route>``: the same for every delivery attempt of one turn to one route."""
    return f"{stream_id}:{route}"


def resolve(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``structured.data.sentiment``), or :data:`MISSING`.

    A segment indexes a mapping by key, or a list by a non-negative integer (``sources.0``).
    Anything else on the way (a string, a number, null, an index out of range) is MISSING.
    """
    node: Any = record
    for part in path.split("."):
        if isinstance(node, Mapping):
            if part not in node:
                return MISSING
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str | bytes):
            if not part.isdigit() or int(part) >= len(node):
                return MISSING
            node = node[int(part)]
        else:
            return MISSING
    return node
