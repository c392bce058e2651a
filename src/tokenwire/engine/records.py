"""Writing each turn's record to the store without ever holding up or breaking a stream.

- The ``running`` row is queued as the turn starts; the turn waits for it only before its first
  visible output (so whatever a client saw has a row), never before earlier events.
- The terminal record is written before the terminal event is published (the turn awaits
  :meth:`TurnRecorder.finish`), so a client that saw ``done`` can rely on the record existing,
  and a crash before that leaves the row ``running``, which the next start marks
  ``interrupted``. The write inserts the running row too if its own insert has not landed, and
  queues the system channel's deliveries in the same transaction.
- Writes are group-committed: one writer task takes every write queued meanwhile and commits
  them in one transaction, so the database's commit cost (an fsync on Postgres) is paid per
  batch, not per turn, and many concurrent turns do not queue for connections.
- A database that is slow or down costs a turn at most ``write_timeout_s``; the write is then
  retried in the background (exactly once is the store's conditional update, so a retry racing
  a slow first attempt cannot write twice) and the stream ends on time regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol.retry import backoff_delay
from ..store import Store, TurnFinish, TurnStart
from .metrics import EngineMetrics

logger = logging.getLogger("tokenwire.records")

_BACKGROUND_ATTEMPTS = 8
_MAX_BATCH = 256


@dataclass(slots=True)
class _Write:
    item: TurnStart | TurnFinish
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class TurnRecorder:
    """The engine's writer of turn records (one per engine, over one :class:`Store`)."""

    def __init__(self, store: Store, *, write_timeout_s: float, metrics: EngineMetrics) -> None:
        self.store = store
        self._timeout_s = write_timeout_s
        self._metrics = metrics
        self._queue: list[_Write] = []
        self._queued = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._starts: dict[str, asyncio.Future[bool]] = {}
        self._retries: set[asyncio.Task[None]] = set()

    def _submit(self, item: TurnStart | TurnFinish) -> asyncio.Future[bool]:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(), name="tokenwire-records"
            )
        write = _Write(item)
        self._queue.append(write)
        self._queued.set()
        return write.done

    async def _write_loop(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
                try:
                    await self._commit(batch)
                except Exception as exc:  # a bug: fail this batch, keep the writer alive
                    logger.exception("the record writer failed")
                    for write in batch:
                        if not write.done.done():
                            write.done.set_exception(exc)
                            write.done.exception()

    async def _commit(self, batch: list[_Write]) -> None:
        starts = [w.item for w in batch if isinstance(w.item, TurnStart)]
        finishes = [w.item for w in batch if isinstance(w.item, TurnFinish)]
        try:
            async with asyncio.timeout(self._timeout_s):
                await self.store.write_batch(starts, finishes)
        except Exception as exc:  # TimeoutError included: nothing of the batch was written
            for write in batch:
                if not write.done.done():
                    write.done.set_exception(exc)
                    write.done.exception()  # retrieved: whoever awaits it gets it too
            return
        for write in batch:
            if not write.done.done():
                write.done.set_result(True)

    def start(self, stream_id: str, started: dict[str, Any]) -> None:
        """Queue the turn's ``running`` row."""
        done = self._submit(TurnStart(stream_id, started))
        done.add_done_callback(self._start_written)
        self._starts[stream_id] = done

    def _start_written(self, done: asyncio.Future[bool]) -> None:
        if not done.cancelled() and done.exception() is not None:
            # finish() inserts the row itself; nothing is lost, but say so.
            self._metrics.store_errors.labels("start").inc()
            logger.warning("recording a turn's start failed: %r", done.exception())

    async def started(self, stream_id: str) -> None:
        """Wait (at most ``write_timeout_s``) for the turn's running row: a turn awaits this
        before its first visible output, so whatever a client saw has a row that a crash
        leaves ``running`` (and the next start marks ``interrupted``). Never raises."""
        done = self._starts.get(stream_id)
        if done is not None and not done.done():
            await asyncio.wait({done}, timeout=self._timeout_s)

    async def finish(
        self,
        stream_id: str,
        terminal: dict[str, Any],
        *,
        started: dict[str, Any],
        deliveries: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> bool:
        """Write the terminal record (and queue ``deliveries``). True when it is written now;
        False when it could not be within the timeout (a background retry takes over)."""
        self._starts.pop(stream_id, None)
        finish = TurnFinish(stream_id, terminal, started, tuple(deliveries))
        try:
            async with asyncio.timeout(self._timeout_s):
                await asyncio.shield(self._submit(finish))
            return True
        except Exception as exc:  # TimeoutError included
            self._metrics.store_errors.labels("finish").inc()
            logger.warning("recording turn %s failed (%r); retrying later", stream_id, exc)
            task = asyncio.get_running_loop().create_task(self._retry(finish))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
            return False

    async def _retry(self, finish: TurnFinish) -> None:
        for attempt in range(1, _BACKGROUND_ATTEMPTS + 1):
            await asyncio.sleep(backoff_delay(attempt, initial_s=0.5, max_s=30.0))
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self.store.write_batch((), (finish,))
                return
            except Exception as exc:
                logger.warning(
                    "retry %d of turn %s's record failed: %r", attempt, finish.stream_id, exc
                )
        self._metrics.store_errors.labels("lost").inc()
        logger.error(
            "turn %s's record could not be written; a restart will mark it interrupted",
            finish.stream_id,
        )

    async def aclose(self) -> None:
        """Let queued writes commit, give background retries one last short chance, stop."""
        pending = [w.done for w in self._queue]
        if pending:
            await asyncio.wait(pending, timeout=self._timeout_s)
        for task in list(self._retries):
            task.cancel()
        if self._retries:
            await asyncio.wait(set(self._retries), timeout=1.0)
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
