"""A finished stream's events, packed for retention: one compressed bytes object.

A finished stream is kept only so that a client can resume it, which few do, while as objects
its events cost ~20x its answer (a ``text.delta`` of a few bytes is an object, a str and an
int of ~120 bytes). Packed, they are their JSON lines (JSON never holds a raw newline),
compressed together: the ``type`` and ``stream_id`` every event repeats compress away, and a
resume decodes only the events after its cursor. Exact: unpacking gives back the very events
(same seq, same fields); see docs/PERFORMANCE.md "Retention" for what it saves.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Sequence

from ..protocol import Event, decode_event, encode_event

_LEVEL = 1
"""zlib's fastest level: most of the gain (the repeated keys) at a few MB/s per ms."""


class PackedEvents:
    """Consecutive events of one stream, packed. :meth:`after` unpacks a suffix."""

    __slots__ = ("_blob", "_count")

    def __init__(self, events: Sequence[Event]) -> None:
        self._count = len(events)
        self._blob = zlib.compress(b"\n".join(encode_event(event) for event in events), _LEVEL)

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """What it holds in memory (headers included)."""
        return sys.getsizeof(self._blob) + sys.getsizeof(self)

    def after(self, index: int) -> list[Event]:
        """The events from position ``index`` (0: the first) to the last."""
        if index >= self._count:
            return []
        lines = zlib.decompress(self._blob).split(b"\n")
        return [decode_event(line) for line in lines[index:]]
