"""The in-memory event log: the embedded default.

Bounded three ways: each stream keeps at most ``max_events`` events (older ones are trimmed,
and a cursor older than the oldest held gets :class:`ResumeUnavailable`, never a silent jump); a
finished stream is dropped ``retention_s`` after its terminal event; and at most
``max_finished`` finished streams are kept at all (the oldest go first), so memory does not grow
with throughput x retention.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from ..protocol import Event, is_terminal
from .log import ResumeUnavailable, UnknownStream


class _Stream:
    __slots__ = ("events", "first_seq", "followers", "head", "terminal")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.first_seq = 1
        self.head = 0
        self.terminal: Event | None = None
        self.followers: set[MemoryFollower] = set()


class MemoryFollower:
    """A cursor into a :class:`MemoryEventLog` stream; see :class:`~tokenwire.bus.Follower`."""

    __slots__ = ("_cursor", "_finished", "_stream", "_stream_id", "_waiter", "_woken")

    def __init__(self, stream_id: str, stream: _Stream, after_seq: int) -> None:
        self._stream_id = stream_id
        self._stream = stream
        self._cursor = after_seq
        self._finished = False
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False

    @property
    def cursor(self) -> int:
        return self._cursor

    @property
    def finished(self) -> bool:
        return self._finished

    def take(self) -> list[Event]:
        stream = self._stream
        cursor = self._cursor
        if cursor < stream.first_seq - 1:
            raise ResumeUnavailable(self._stream_id, cursor, stream.first_seq)
        if cursor >= stream.head:
            if stream.terminal is not None:
                self._finished = True
            return []
        batch = stream.events[cursor - stream.first_seq + 1 :]
        self._cursor = stream.head
        if stream.terminal is not None:
            self._finished = True
        return batch

    async def wait(self) -> None:
        if self._woken or self._cursor < self._stream.head or self._finished:
            self._woken = False
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._stream.followers.add(self)
        try:
            await waiter
        finally:
            self._waiter = None
            self._woken = False
            self._stream.followers.discard(self)

    def wake(self) -> None:
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class MemoryEventLog:
    """Event logs of every live or recently finished stream of this process."""

    def __init__(
        self,
        *,
        max_events: int = 100_000,
        retention_s: float = 300.0,
        max_finished: int = 10_000,
        on_expire: Callable[[str], object] | None = None,
    ) -> None:
        """``on_expire(stream_id)`` is called when a finished stream is dropped (metrics,
        tests)."""
        self._max_events = max_events
        self._retention_s = retention_s
        self._max_finished = max_finished
        self._streams: dict[str, _Stream] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._on_expire = on_expire

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._streams

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, stream_id: str, *, first_seq: int = 1) -> None:
        """``first_seq``: the seq of the first event to be appended (a copy of a stream whose
        earlier events were trimmed elsewhere starts after them)."""
        if stream_id in self._streams:
            raise ValueError(f"stream {stream_id} already exists")
        stream = self._streams[stream_id] = _Stream()
        stream.first_seq = first_seq
        stream.head = first_seq - 1

    def append(self, stream_id: str, event: Event) -> None:
        stream = self._get(stream_id)
        stream.events.append(event)
        stream.head = event.seq
        if len(stream.events) > self._max_events + self._max_events // 4:
            # Trim in steps, not per append, so the cost stays amortised O(1).
            drop = len(stream.events) - self._max_events
            del stream.events[:drop]
            stream.first_seq += drop
        if is_terminal(event):
            stream.terminal = event
            self._finished[stream_id] = None
            while len(self._finished) > self._max_finished:
                self._expire(next(iter(self._finished)))
            asyncio.get_running_loop().call_later(self._retention_s, self._expire, stream_id)
        if stream.followers:
            for follower in list(stream.followers):
                follower.wake()

    def terminal(self, stream_id: str) -> Event | None:
        return self._get(stream_id).terminal

    def head(self, stream_id: str) -> int:
        return self._get(stream_id).head

    def follower(self, stream_id: str, after_seq: int = 0) -> MemoryFollower:
        return MemoryFollower(stream_id, self._get(stream_id), after_seq)

    def drop(self, stream_id: str) -> None:
        """Forget a stream now (its owner has no more use for it)."""
        self._expire(stream_id)

    def _get(self, stream_id: str) -> _Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise UnknownStream(stream_id) from None

    def _expire(self, stream_id: str) -> None:
        self._finished.pop(stream_id, None)
        if self._streams.pop(stream_id, None) is not None and self._on_expire is not None:
            self._on_expire(stream_id)
