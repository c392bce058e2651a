"""The event log interface: every event of a stream is appended here before anyone sees it.

Readers never get events from the producer directly: they read the log from a cursor (the
``seq`` after which they want events) and follow it live. So a reader that falls behind costs a
cursor, not a copy; a late joiner replays; and the producer never waits for a reader.

Shaped to fit more than memory: ``append`` is synchronous and never blocks the producer (a
networked backend buffers and pipelines its writes); a :class:`Follower` hands out what has
arrived without awaiting (``take``) and waits separately (``wait``), so a reader that is behind
writes many events in one send, and a reader can be woken for its own reasons (a heartbeat).
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


class Follower(Protocol):
    """One reader's cursor into one stream."""

    @property
    def cursor(self) -> int:
        """The seq of the last event taken (the ``after_seq`` to resume from)."""
        ...

    @property
    def finished(self) -> bool:
        """True once the terminal event has been taken: nothing more will come."""
        ...

    def take(self) -> list[Event]:
        """Every event after the cursor that has arrived (maybe none); advances the cursor.
        Raises :class:`ResumeUnavailable` if the cursor fell out of the log."""
        ...

    async def wait(self) -> None:
        """Return when events may have arrived after the cursor, or :meth:`wake` was called."""
        ...

    def wake(self) -> None:
        """Make a pending (or the next) :meth:`wait` return now."""
        ...


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

    def follower(self, stream_id: str, after_seq: int = 0) -> Follower:
        """A cursor after ``after_seq``. Raises :class:`UnknownStream`."""
        ...


async def follow(follower: Follower) -> AsyncIterator[list[Event]]:
    """Replay then follow live, in batches, until the terminal event has been yielded."""
    while True:
        batch = follower.take()
        if batch:
            yield batch
            if follower.finished:
                return
        elif follower.finished:
            return
        else:
            await follower.wait()
