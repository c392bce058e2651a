"""The SSE response: follows a stream's event log and writes it to one HTTP client.

Two tasks per response, raced: the writer (log → socket, heartbeats while quiet) and the
listener (waits for ``http.disconnect``). Whichever finishes first ends the other, as
Starlette's ``StreamingResponse`` does. The reader's memory is a cursor: events wait in the
log, not in a per-connection queue. A reader that cannot keep up (a send blocked past
``send_timeout_s``, or more than ``max_lag_events`` behind a live turn) is disconnected.

When the client that started the turn goes away before the terminal event, the turn is stopped
with reason ``client_gone``, which aborts the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..engine import TurnHandle
from ..engine.metrics import EngineMetrics
from ..protocol import Event, Reason, encode_sse_comment, encode_sse_event, is_terminal

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
        cancel_on_disconnect: bool = True,
    ) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.handle = handle
        self._metrics = metrics
        self._heartbeat_s = heartbeat_s
        self._send_timeout_s = send_timeout_s
        self._max_lag = max_lag_events
        self._after_seq = after_seq
        self._cancel_on_disconnect = cancel_on_disconnect
        self.terminal_sent = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [*SSE_HEADERS, (b"x-tokenwire-stream-id", self.handle.stream_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        writer = asyncio.ensure_future(self._write(send))
        listener = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait((writer, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writer, listener):
                task.cancel()
            for task in (writer, listener):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if not self.terminal_sent and self._cancel_on_disconnect:
                self.handle.cancel(Reason.CLIENT_GONE)

    async def _write(self, send: Send) -> None:
        cursor = self._after_seq
        caught_up = False
        events: AsyncIterator[list[Event]] | None = None
        while True:
            if events is None:
                events = self.handle.batches(cursor)
            try:
                batch = await _next_within(events, self._heartbeat_s)
            except StopAsyncIteration:
                break
            if batch is None:
                events = None  # the timeout closed it; the next one starts from the cursor
                if not await self._send(send, _HEARTBEAT):
                    return
                continue
            if caught_up and len(batch) > self._max_lag and not is_terminal(batch[-1]):
                logger.info(
                    "stream %s: reader %d events behind; disconnecting it",
                    self.handle.stream_id,
                    len(batch),
                )
                self._metrics.slow_client_disconnects.inc()
                return
            caught_up = True
            cursor = batch[-1].seq
            if not await self._send(send, _frames(batch)):
                return
            if is_terminal(batch[-1]):
                self.terminal_sent = True
                break
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send(self, send: Send, body: bytes) -> bool:
        try:
            async with asyncio.timeout(self._send_timeout_s):
                await send({"type": "http.response.body", "body": body, "more_body": True})
        except TimeoutError:
            logger.info(
                "stream %s: send blocked for %.0f s; disconnecting the reader",
                self.handle.stream_id,
                self._send_timeout_s,
            )
            self._metrics.slow_client_disconnects.inc()
            return False
        except OSError:
            return False
        return True


async def _next_within(events: AsyncIterator[list[Event]], timeout_s: float) -> list[Event] | None:
    """The next batch, or None when ``timeout_s`` passes first (time for a heartbeat). The
    iterator is restarted by the caller from its cursor, so losing it to the timeout is free."""
    try:
        async with asyncio.timeout(timeout_s):
            return await anext(events)
    except TimeoutError:
        return None


def _frames(batch: list[Event]) -> bytes:
    if len(batch) == 1:
        return encode_sse_event(batch[0])
    return b"".join([encode_sse_event(event) for event in batch])


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
