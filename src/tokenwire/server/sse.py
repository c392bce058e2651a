"""The SSE response: follows a stream's event log and writes it to one HTTP client.

Two tasks per response, raced: the writer (log → socket) and the listener (waits for
``http.disconnect``); whichever finishes first ends the other, as Starlette's
``StreamingResponse`` does. The reader's memory is a cursor: events wait in the log, not in a
per-connection queue.

Timekeeping costs one timer per connection per tick, never one per event: a watchdog wakes every
``tick_s`` to send a heartbeat comment when nothing was written for ``heartbeat_s``, and to
disconnect a reader whose send has been blocked (TCP back-pressure) for ``send_timeout_s``. A
reader more than ``max_lag_events`` behind a live turn is disconnected too.

When the client that started the turn goes away before the terminal event, the turn applies its
``on_disconnect`` policy (``cancel``: stopped now with reason ``client_gone``, which aborts the
upstream; ``continue``: kept running for a grace period so a reader can resume). A viewer (a
resume or a join) leaving never stops a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..bus import Follower, ResumeUnavailable
from ..engine import TurnHandle
from ..engine.metrics import EngineMetrics
from ..protocol import Event, encode_sse_comment, encode_sse_event
from .errors import error_response

logger = logging.getLogger("tokenwire.sse")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

_HEARTBEAT = encode_sse_comment("keep-alive")


class EventStreamResponse(Response):
    """ASGI response streaming one turn's events as SSE."""

    def __init__(
        self,
        handle: TurnHandle,
        *,
        metrics: EngineMetrics,
        heartbeat_s: float,
        send_timeout_s: float,
        max_lag_events: int,
        after_seq: int = 0,
        originator: bool = True,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self._extra_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in (extra_headers or {}).items()
        ]
        self.handle = handle
        self._metrics = metrics
        self._heartbeat_s = heartbeat_s
        self._send_timeout_s = send_timeout_s
        self._max_lag = max_lag_events
        self._after_seq = after_seq
        self._originator = originator
        self.terminal_sent = False
        self._follower: Follower | None = None
        self._writer: asyncio.Future[None] | None = None
        self._last_write = 0.0
        self._send_started: float | None = None
        self._heartbeat_due = False
        self._slow = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._first: list[Event] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        follower = self.handle.follower(self._after_seq)
        try:
            # Before any header: a cursor the log no longer covers is an explicit error.
            self._first = follower.take()
        except ResumeUnavailable as exc:
            await error_response(410, "resume_unavailable", str(exc))(scope, receive, send)
            return
        headers = [
            *SSE_HEADERS,
            (b"x-tokenwire-stream-id", self.handle.stream_id.encode()),
            *self._extra_headers,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        loop = asyncio.get_running_loop()
        self._follower = follower
        self.handle.attach()
        self._last_write = loop.time()
        tick_s = min(self._heartbeat_s, self._send_timeout_s) / 4
        self._watchdog = loop.call_later(tick_s, self._tick, tick_s)
        self._writer = writer = asyncio.ensure_future(self._write(send))
        listener = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait((writer, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            for task in (writer, listener):
                task.cancel()
            for task in (writer, listener):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._slow:
                self._metrics.slow_client_disconnects.inc()
            # The turn applies its on_disconnect policy if this reader started it (and it is
            # still running); a viewer leaving never stops it.
            self.handle.detach(originator=self._originator and not self.terminal_sent)

    def _tick(self, tick_s: float) -> None:
        """The per-connection watchdog: heartbeats and the send timeout, off the hot path."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        writer = self._writer
        if writer is None or writer.done():
            return
        if self._send_started is not None and now - self._send_started >= self._send_timeout_s:
            logger.info(
                "stream %s: a send blocked for %.0f s; disconnecting the reader",
                self.handle.stream_id,
                now - self._send_started,
            )
            self._slow = True
            writer.cancel()
            return
        if self._send_started is None and now - self._last_write >= self._heartbeat_s:
            self._heartbeat_due = True
            if self._follower is not None:
                self._follower.wake()
        self._watchdog = loop.call_later(tick_s, self._tick, tick_s)

    async def _write(self, send: Send) -> None:
        follower = self._follower
        assert follower is not None
        loop = asyncio.get_running_loop()
        caught_up = False
        first: list[Event] | None = self._first
        while True:
            if first is not None:
                batch, first = first, None
            else:
                try:
                    batch = follower.take()
                except ResumeUnavailable:
                    # This reader fell so far behind that the log trimmed what it had not read:
                    # end the response; a resume from its last id gets resume_unavailable.
                    logger.info("stream %s: reader fell out of the log", self.handle.stream_id)
                    self._slow = True
                    return
            if batch:
                if caught_up and len(batch) > self._max_lag and not follower.finished:
                    logger.info(
                        "stream %s: reader %d events behind; disconnecting it",
                        self.handle.stream_id,
                        len(batch),
                    )
                    self._slow = True
                    return
                caught_up = True
                await self._send(send, _frames(batch), loop)
                if follower.finished:
                    self.terminal_sent = True
                    break
                continue
            if follower.finished:
                break
            if self._heartbeat_due:
                self._heartbeat_due = False
                await self._send(send, _HEARTBEAT, loop)
                continue
            await follower.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send(self, send: Send, body: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self._send_started = loop.time()
        await send({"type": "http.response.body", "body": body, "more_body": True})
        self._send_started = None
        self._last_write = loop.time()


def _frames(batch: list[Event]) -> bytes:
    if len(batch) == 1:
        return encode_sse_event(batch[0])
    return b"".join([encode_sse_event(event) for event in batch])


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
