"""The gateway's event log: a local copy of every stream it serves, filled from Redis.

A gateway never runs turns; it reads them. :meth:`RedisLogReader.track` loads a stream's events
(``XRANGE``) into a local :class:`~tokenwire.bus.MemoryEventLog` and adds it to the tail: one
task per gateway blocks on ``XREAD`` over every stream it follows at once, appending what
arrives to the local copies and waking their followers. So readers on a gateway behave exactly
as in embedded mode (a cursor into a local log, replay from any seq), a thousand readers of one
turn cost one Redis read, and following a new stream wakes the blocked read through the
gateway's own poke stream instead of waiting out its timeout.

A Redis that is down or paused makes the tail fail or time out (never hang: every command is
bounded); it retries with backoff, readers keep their connections (heartbeats) and continue
from their cursor when Redis is back. A Redis that came back *without its data* (a restart
without persistence) may have lost a turn whole, its job with it: every ``check_s`` the tail
looks for followed turns that have neither a run nor a meta key any more, and hands them to
``on_lost`` (the gateway ends them), so no reader waits for a turn nobody will run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable

from ..bus import MemoryEventLog, UnknownStream
from ..config import RedisSettings
from ..protocol import Event, decode_event, is_terminal
from ..protocol.retry import backoff_delay
from .connection import UNAVAILABLE, RedisClient
from .keys import Keys
from .local_copy import LocalCopy

logger = logging.getLogger("tokenwire.cluster")

TAIL_BLOCK_MS = 1000
"""The tail's longest blocking read; new streams wake it sooner through the poke stream."""


def _seq(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.partition("-")[0])


class RedisLogReader(LocalCopy):
    """The :class:`~tokenwire.bus.EventLog` of a gateway (read side only)."""

    def __init__(
        self,
        redis: RedisClient,
        tail_redis: RedisClient,
        settings: RedisSettings,
        *,
        retention_s: float,
        max_events: int,
        max_finished: int,
        max_stream_bytes: int = 16 * 1024 * 1024,
        max_retained_bytes: int = 256 * 1024 * 1024,
        on_error: Callable[[str], None] = lambda _op: None,
        on_lost: Callable[[str, list[Event]], Awaitable[None]] | None = None,
        check_s: float = 2.0,
    ) -> None:
        self._redis = redis
        self._on_lost = on_lost
        self._check_s = check_s
        self._janitor: asyncio.Task[None] | None = None
        self._tail_redis = tail_redis
        self._keys = Keys(settings.prefix)
        self.local = MemoryEventLog(
            max_events=max_events,
            retention_s=retention_s,
            max_finished=max_finished,
            max_stream_bytes=max_stream_bytes,
            max_retained_bytes=max_retained_bytes,
        )
        self._tailing: dict[str, int] = {}
        """Stream id → the seq of the last event copied, for the streams still running."""
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._id = secrets.token_hex(8)
        self._poke_id = b"0-0"
        self._tail: asyncio.Task[None] | None = None
        self._on_error = on_error

    # -- EventLog (read side) ----------------------------------------------------------------

    # The write side exists for the EventLog contract only: a gateway's engine never starts a
    # turn (it enqueues it), so a call here is a bug, and it fails loudly.

    def open(self, stream_id: str) -> None:
        raise RuntimeError("a gateway does not run turns: its event log is read-only")

    def append(self, stream_id: str, event: Event) -> None:
        raise RuntimeError("a gateway does not run turns: its event log is read-only")

    # -- following Redis -------------------------------------------------------------------

    async def track(self, stream_id: str) -> None:
        """Have the stream in the local copy, followed live until its terminal event. Raises
        the Redis errors of :data:`~.connection.UNAVAILABLE` when it cannot be loaded.

        Once it returns, the local copy holds at least what Redis held when it was called: a
        client that saw seq N through another gateway finds N here too."""
        if stream_id not in self.local:
            loading = self._loading.get(stream_id)
            if loading is None:
                # Loaded by this call: the copy holds what Redis held when it was called.
                loading = asyncio.ensure_future(self._load(stream_id))
                self._loading[stream_id] = loading
                loading.add_done_callback(lambda _f: self._loading.pop(stream_id, None))
                await asyncio.shield(loading)
                return
            # Joining another reader's load, whose read may predate this call.
            await asyncio.shield(loading)
        if stream_id in self._tailing:
            await self._catch_up(stream_id)

    async def _load(self, stream_id: str) -> None:
        entries = await self._redis.xrange(self._keys.events(stream_id))
        if stream_id in self.local:
            return
        events = [decode_event(fields[b"e"]) for _id, fields in entries]
        first = events[0].seq if events else 1
        self.local.open(stream_id, first_seq=first)
        for event in events:
            self.local.append(stream_id, event)
        if not (events and is_terminal(events[-1])):
            self._tailing[stream_id] = events[-1].seq if events else 0
            await self._poke()
            if self._tail is None:
                self._tail = asyncio.get_running_loop().create_task(self._tail_loop())
            if self._janitor is None and self._on_lost is not None:
                self._janitor = asyncio.get_running_loop().create_task(self._janitor_loop())

    async def _catch_up(self, stream_id: str) -> None:
        """Copy what Redis holds past the local head of a stream the tail follows. The tail
        copies it too, but up to one blocking read later: without this, a resume at the
        terminal's seq (seen on another gateway) would find a cursor "ahead of the stream"
        here. Redis unavailable: the copy stays as it is (the tail reports the outage)."""
        head = self._tailing[stream_id]
        key = self._keys.events(stream_id)
        with contextlib.suppress(*UNAVAILABLE):
            entries = await self._redis.xrange(key, min=f"{head + 1}-0")
            self._copy(key, entries)

    async def _poke(self) -> None:
        with contextlib.suppress(*UNAVAILABLE):
            await self._redis.xadd(self._keys.poke(self._id), {b"p": b"1"}, maxlen=10)
            await self._redis.expire(self._keys.poke(self._id), 3600)

    async def _tail_loop(self) -> None:
        failures = 0
        poke_key = self._keys.poke(self._id).encode()
        while True:
            streams: dict[bytes | str, bytes | str] = {poke_key: self._poke_id}
            for stream_id, head in self._tailing.items():
                streams[self._keys.events(stream_id)] = f"{head}-0"
            try:
                answer = await self._tail_redis.xread(streams, block=TAIL_BLOCK_MS, count=1000)
            except UNAVAILABLE as exc:
                self._on_error("tail")
                failures += 1
                if failures == 1:
                    logger.warning("reading streams from Redis failed: %r; retrying", exc)
                await asyncio.sleep(backoff_delay(failures - 1, initial_s=0.05, max_s=1.0))
                continue
            if failures:
                logger.info("reading streams from Redis again")
            failures = 0
            for key, entries in answer or ():
                if key == poke_key:
                    self._poke_id = entries[-1][0]
                    continue
                self._copy(key.decode(), entries)

    def _copy(self, key: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        stream_id = key.split("{", 1)[1].split("}", 1)[0]
        head = self._tailing.get(stream_id)
        if head is None:
            return
        for entry_id, fields in entries:
            seq = _seq(entry_id)
            if seq <= head:
                continue  # already copied (a reload raced the tail)
            event = decode_event(fields[b"e"])
            try:
                self.local.append(stream_id, event)
            except UnknownStream:
                self._tailing.pop(stream_id, None)
                return
            head = seq
            if is_terminal(event):
                self._tailing.pop(stream_id, None)
                return
        self._tailing[stream_id] = head

    async def _janitor_loop(self) -> None:
        assert self._on_lost is not None
        while True:
            await asyncio.sleep(self._check_s)
            stream_ids = list(self._tailing)
            if not stream_ids:
                continue
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for stream_id in stream_ids:
                        pipe.exists(self._keys.run(stream_id), self._keys.meta(stream_id))
                    found = await pipe.execute()
            except UNAVAILABLE:
                continue  # the tail reports it
            for stream_id, count in zip(stream_ids, found, strict=True):
                if count == 0 and stream_id in self._tailing:
                    events = self.local.follower(stream_id, 0).take()
                    with contextlib.suppress(*UNAVAILABLE):
                        await self._on_lost(stream_id, events)

    async def aclose(self) -> None:
        for task in (self._tail, self._janitor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
