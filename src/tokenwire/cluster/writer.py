"""The worker's event log: every event of the turns it runs, written to Redis.

``append`` never blocks the turn (the :class:`~tokenwire.bus.EventLog` contract): events go to
a local copy and a pending list, and one flusher task writes every stream's pending events in
one pipelined round trip, each stream's batch through the fenced append script
(:mod:`.scripts`). So a token costs the turn a list append, and Redis sees one command per
stream per flush, however fast tokens come.

When Redis cannot take the writes, the flusher retries with backoff and keeps the events; a
stream that could not be written for ``log_unavailable_s`` is reported once
(``on_unwritable(stream_id, LOG_UNAVAILABLE)``) so its turn is stopped, and its terminal event
is written when Redis is back. A stream whose claim another worker took is reported
(``WORKER_LOST``) and nothing more of it is written. A stream whose run Redis lost (a restart
without persistence) is written again from its first event, from the local copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..bus import MemoryEventLog
from ..config import RedisSettings
from ..protocol import Event, Reason, encode_event, is_terminal
from ..protocol.retry import backoff_delay
from .connection import UNAVAILABLE, RedisClient
from .keys import Keys
from .local_copy import LocalCopy
from .scripts import APPEND, RESEED

logger = logging.getLogger("tokenwire.cluster")

_FENCED = -1
_RUN_LOST = -2


@dataclass(slots=True)
class _Stream:
    token: str
    prior: list[Event] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    pending: list[Event] = field(default_factory=list)
    written: int = 0
    """The head Redis acknowledged."""
    appended: int = 0
    """The seq of the last event appended (the local copy may expire before Redis has it)."""
    fenced: bool = False
    failing_since: float | None = None
    reported: bool = False
    waiters: list[asyncio.Future[bool]] = field(default_factory=list)


class RedisLogWriter(LocalCopy):
    """The :class:`~tokenwire.bus.EventLog` of a worker. :meth:`claim` a stream (with the
    fencing token the worker holds for it) before opening it."""

    def __init__(
        self,
        redis: RedisClient,
        settings: RedisSettings,
        *,
        retention_s: float,
        max_events: int,
        max_stream_bytes: int = 16 * 1024 * 1024,
        on_unwritable: Callable[[str, Reason], None] = lambda _sid, _reason: None,
        on_error: Callable[[str], None] = lambda _op: None,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._keys = Keys(settings.prefix)
        self._retention_ms = max(1, int(retention_s * 1000))
        # The local copy serves head/terminal/followers in this process, and is what a stream
        # is written again from should Redis lose it; it is dropped when the worker is done
        # with the stream (forget), Redis being the truth for everyone else: so never packed.
        self.local = MemoryEventLog(
            max_events=max_events,
            retention_s=max(retention_s, 60.0),
            max_finished=10_000,
            max_stream_bytes=max_stream_bytes,
            max_retained_bytes=2**62,  # what the worker runs: bounded by concurrency
            pack_finished=False,
        )
        self._streams: dict[str, _Stream] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._append = redis.register_script(APPEND)
        self._reseed = redis.register_script(RESEED)
        self.on_unwritable = on_unwritable
        self._on_error = on_error

    # -- EventLog --------------------------------------------------------------------------

    def claim(
        self,
        stream_id: str,
        token: str,
        *,
        prior: list[Event] | None = None,
        meta: dict[str, str] | None = None,
        written: int | None = None,
    ) -> None:
        """Write ``stream_id`` with ``token``; ``prior``: its events already in Redis (a turn
        taken over continues after them); ``meta``: its gateway-side description, put back
        should Redis lose the turn; ``written``: the head Redis holds, if not ``prior``'s."""
        prior = prior or []
        if written is None:
            written = prior[-1].seq if prior else 0
        self._streams[stream_id] = _Stream(
            token=token, prior=prior, meta=dict(meta or {}), written=written, appended=written
        )

    def open(self, stream_id: str) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise ValueError(f"stream {stream_id} was not claimed")
        prior, stream.prior = stream.prior, []
        self.local.open(stream_id, first_seq=prior[0].seq if prior else 1)
        for event in prior:
            self.local.append(stream_id, event)

    def append(self, stream_id: str, event: Event) -> None:
        self.local.append(stream_id, event)
        stream = self._streams.get(stream_id)
        if stream is None or stream.fenced:
            return
        stream.pending.append(event)
        stream.appended = max(stream.appended, event.seq)
        self._dirty.add(stream_id)
        self._wake.set()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    # -- durability ------------------------------------------------------------------------

    async def flushed(self, stream_id: str) -> bool:
        """Wait until every event appended so far is in Redis: True; False when the stream
        lost its claim (what is left will never be written by this worker)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return False
        if stream.fenced:
            return False
        if not stream.pending and stream.written >= stream.appended:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        stream.waiters.append(waiter)
        return await waiter

    def forget(self, stream_id: str) -> None:
        self.local.drop(stream_id)
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            for waiter in stream.waiters:
                if not waiter.done():
                    waiter.set_result(False)

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    # -- the flusher -----------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            batches: list[tuple[str, _Stream, list[Event]]] = []
            for stream_id in dirty:
                stream = self._streams.get(stream_id)
                if stream is None or stream.fenced or not stream.pending:
                    continue
                batches.append((stream_id, stream, stream.pending))
                stream.pending = []
            if not batches:
                continue
            try:
                results = await self._write(batches)
            except UNAVAILABLE as exc:
                self._on_error("append")
                now = loop.time()
                for stream_id, stream, events in batches:
                    # Back in front of what arrived meanwhile, in order.
                    stream.pending = events + stream.pending
                    self._dirty.add(stream_id)
                    if stream.failing_since is None:
                        stream.failing_since = now
                    elif (
                        not stream.reported
                        and now - stream.failing_since >= self._settings.log_unavailable_s
                    ):
                        stream.reported = True
                        logger.warning("stream %s: events cannot be written (%r)", stream_id, exc)
                        self.on_unwritable(stream_id, Reason.LOG_UNAVAILABLE)
                failures += 1
                await asyncio.sleep(backoff_delay(failures - 1, initial_s=0.05, max_s=1.0))
                self._wake.set()
                continue
            failures = 0
            for (stream_id, stream, events), result in zip(batches, results, strict=True):
                await self._settle(stream_id, stream, events, result)

    async def _write(self, batches: list[tuple[str, _Stream, list[Event]]]) -> list[int]:
        keys = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream_id, stream, events in batches:
                args: list[str | bytes | int] = [
                    stream.token,
                    self._settings.stream_maxlen,
                    self._retention_ms if any(is_terminal(e) for e in events) else 0,
                    stream_id,
                ]
                for event in events:
                    args.append(event.seq)
                    args.append(encode_event(event))
                await self._append(
                    keys=[
                        keys.events(stream_id),
                        keys.run(stream_id),
                        keys.meta(stream_id),
                        keys.active,
                        keys.tenant_turns(stream.meta.get("tenant") or None),
                    ],
                    args=args,
                    client=pipe,
                )
            return [int(r) for r in await pipe.execute()]

    async def _settle(
        self, stream_id: str, stream: _Stream, events: list[Event], result: int
    ) -> None:
        if result == _FENCED:
            stream.fenced = True
            stream.pending = []
            logger.warning("stream %s: another worker took it over; this one stops", stream_id)
            self._resolve(stream, False)
            self.on_unwritable(stream_id, Reason.WORKER_LOST)
            return
        if result == _RUN_LOST:
            # Redis lost the turn (restarted without persistence): write it again, whole.
            logger.warning("stream %s: Redis lost its events; writing them again", stream_id)
            keys = self._keys
            with contextlib.suppress(*UNAVAILABLE):
                # Failing here leaves the run missing: the next write finds it so again.
                meta = [item for pair in stream.meta.items() for item in pair]
                await self._reseed(
                    keys=[keys.run(stream_id), keys.events(stream_id), keys.meta(stream_id)],
                    args=[stream.token, *meta],
                )
            stream.written = 0
            stream.pending = self._all_local(stream_id) or events
            self._dirty.add(stream_id)
            self._wake.set()
            return
        stream.written = result
        stream.failing_since = None
        if not stream.pending and stream.written >= stream.appended:
            self._resolve(stream, True)

    def _all_local(self, stream_id: str) -> list[Event]:
        try:
            return self.local.follower(stream_id, 0).take()
        except Exception:
            return []

    @staticmethod
    def _resolve(stream: _Stream, ok: bool) -> None:
        waiters, stream.waiters = stream.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(ok)
