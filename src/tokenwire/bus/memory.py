"""The in-memory event log: the embedded default.

Bounded in events, in bytes and in time: each stream keeps at most ``max_events`` events and
about ``max_stream_bytes`` bytes of them (older ones are trimmed, and a cursor older than the
oldest held gets :class:`ResumeUnavailable`, never a silent jump); a finished stream is packed
(:mod:`.packed`: its JSON, compressed; a few times smaller) and dropped
``retention_s`` after its terminal event; and finished streams are dropped oldest first while
there are more than ``max_finished`` of them or the log holds more than ``max_retained_bytes``
in all, so memory does not grow with throughput x retention. A dropped stream is unknown
(:class:`UnknownStream`) to a new reader; a follower already reading it reads to its end.

Bytes are counted as the events' JSON would be (a ``text.delta`` by its text plus a constant
for the rest, so counting costs no encoding), and a packed stream by what it really holds.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from ..protocol import Event, TextDelta, encode_event, is_terminal
from .log import ResumeUnavailable, UnknownStream
from .packed import PackedEvents

_DELTA_JSON = len(encode_event(TextDelta(stream_id="tw_" + "0" * 32, seq=10_000, delta="")))
"""What a ``text.delta``'s JSON holds besides its text (a typical stream id and seq)."""


def event_bytes(event: Event) -> int:
    """The bytes an event counts for: its JSON's size (estimated for a ``text.delta``)."""
    if isinstance(event, TextDelta):
        return _DELTA_JSON + len(event.delta)
    return len(encode_event(event))


class _Stream:
    __slots__ = ("events", "first_seq", "followers", "head", "nbytes", "packed", "terminal")

    def __init__(self) -> None:
        self.events: list[Event] = []
        """The events held (while the stream runs, and until it is packed)."""
        self.packed: PackedEvents | None = None
        """Once finished: the events held before the terminal, packed (``events`` is empty)."""
        self.first_seq = 1
        self.head = 0
        self.nbytes = 0
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
        if stream.packed is not None:
            assert stream.terminal is not None
            batch = stream.packed.after(cursor - stream.first_seq + 1)
            batch.append(stream.terminal)
        else:
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
        max_stream_bytes: int = 16 * 1024 * 1024,
        max_retained_bytes: int = 256 * 1024 * 1024,
        pack_finished: bool = True,
        on_expire: Callable[[str], object] | None = None,
    ) -> None:
        """``pack_finished``: pack a stream once it has finished (off for a copy that is
        dropped as soon as it ends). ``on_expire(stream_id)`` is called when a finished stream
        is dropped (metrics, tests)."""
        self._max_events = max_events
        self._retention_s = retention_s
        self._max_finished = max_finished
        self._max_stream_bytes = max_stream_bytes
        self._max_retained_bytes = max_retained_bytes
        self._pack_finished = pack_finished
        self._streams: dict[str, _Stream] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._bytes = 0
        self._on_expire = on_expire

    @property
    def retained_bytes(self) -> int:
        """The bytes every stream held counts for (running and finished)."""
        return self._bytes

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
        size = event_bytes(event)
        stream.events.append(event)
        stream.head = event.seq
        stream.nbytes += size
        self._bytes += size
        if (
            len(stream.events) > self._max_events + self._max_events // 4
            or stream.nbytes > self._max_stream_bytes
        ):
            self._trim(stream)
        if is_terminal(event):
            stream.terminal = event
            self._finished[stream_id] = None
            loop = asyncio.get_running_loop()
            loop.call_later(self._retention_s, self._expire, stream_id)
            if self._pack_finished:
                # After the followers woken below have taken the end from the list.
                loop.call_soon(self._pack, stream_id, stream)
            self._evict()
        if stream.followers:
            for follower in list(stream.followers):
                follower.wake()

    def _trim(self, stream: _Stream) -> None:
        """Drop a stream's oldest events down to its bounds, in steps (to 3/4 of the byte
        bound, to ``max_events``), not per append, so the cost stays amortised O(1). The last
        event is always kept."""
        events = stream.events
        drop = max(0, len(events) - self._max_events)
        freed = sum(event_bytes(event) for event in events[:drop])
        target = self._max_stream_bytes - self._max_stream_bytes // 4
        while stream.nbytes - freed > target and drop < len(events) - 1:
            freed += event_bytes(events[drop])
            drop += 1
        del events[:drop]
        stream.first_seq += drop
        stream.nbytes -= freed
        self._bytes -= freed

    def _pack(self, stream_id: str, stream: _Stream) -> None:
        if self._streams.get(stream_id) is not stream or stream.packed is not None:
            return  # dropped meanwhile
        assert stream.terminal is not None and stream.events[-1] is stream.terminal
        packed = PackedEvents(stream.events[:-1])
        stream.events = []
        stream.packed = packed
        nbytes = packed.nbytes + event_bytes(stream.terminal)
        self._bytes += nbytes - stream.nbytes
        stream.nbytes = nbytes
        self._evict()

    def _evict(self) -> None:
        """Drop finished streams, oldest first, while they are too many or the log too big."""
        while self._finished and (
            len(self._finished) > self._max_finished or self._bytes > self._max_retained_bytes
        ):
            self._expire(next(iter(self._finished)))

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
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._bytes -= stream.nbytes
        if self._on_expire is not None:
            self._on_expire(stream_id)
