"""The event log interface: every event of a stream is appended here before anyone sees it.

Readers never get events from the producer directly: they read the log from a cursor (the
``seq`` after which they want events) and follow it live. So a reader that falls behind costs a
cursor, not a copy; a late joiner replays; and the producer never waits for a reader.

Shaped to fit more than memory: ``append`` is synchronous and never blocks the producer (a
networked backend buffers and pipelines its writes), and ``follow`` yields *batches*, so a
reader that is behind writes many events in one send.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from ..protocol import Event


class ResumeUnavailable(Exception):
    """The cursor is older than what the log still holds (trimmed or expired)."""

    def __init__(self, stream_id: str, after_seq: int, first_seq: int) -> None:
        super().__init__(
            f"stream {stream_id}: events after seq {after_seq} are no longer held "
            f"(oldest held: {first_seq})"
        )
        self.stream_id = stream_id
        self.after_seq = after_seq
        self.first_seq = first_seq


class UnknownStream(KeyError):
    """No stream with that id is held (never existed, or expired)."""


class EventLog(Protocol):
    def open(self, stream_id: str) -> None:
        """Create an empty log for a new stream."""
        ...

    def append(self, stream_id: str, event: Event) -> None:
        """Append the next event (the caller guarantees seq order). Never blocks."""
        ...

    def terminal(self, stream_id: str) -> Event | None:
        """The stream's terminal event, once appended. Raises :class:`UnknownStream`."""
        ...

    def head(self, stream_id: str) -> int:
        """The seq of the last event appended (0 for none). Raises :class:`UnknownStream`."""
        ...

    def follow(self, stream_id: str, after_seq: int = 0) -> AsyncIterator[list[Event]]:
        """Replay the events after ``after_seq`` and follow live, in batches, until the
        terminal event has been yielded. Raises :class:`UnknownStream` or
        :class:`ResumeUnavailable`."""
        ...
