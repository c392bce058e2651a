"""The SSE response: follows a stream's event log and writes it to one HTTP client.

Two tasks per response, raced: the writer (log → socket) and the listener (waits for
``http.disconnect``); whichever finishes first ends the other, as Starlette's
``StreamingResponse`` does. The reader's memory is a cursor: events wait in the log, not in a
per-connection queue.

Heartbeats and the send timeout are :class:`~.pacing.SendPacer`'s (one timer per connection per
tick, never one per event). A reader more than ``max_lag_events`` behind a live turn is
disconnected too.

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
from starlette.types import Receive, Scope, Send

from ..bus import Follower, ResumeUnavailable
from ..engine import TurnHandle
from ..engine.metrics import EngineMetrics
from ..protocol import Event, encode_sse_comment, encode_sse_event
from ..protocol.sse import encode_sse_retry
from .errors import error_response
from .pacing import SendPacer, drop_connection, wait_disconnect

logger = logging.getLogger("tokenwire.sse")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

_HEARTBEAT = encode_sse_comment("keep-alive")

RETRY_MS = 2000
"""The reconnection delay every stream tells a browser's EventSource (its own default is about
3 s): soon enough that a drop costs little, well inside ``disconnect_grace_s`` (30 s) for a
turn that waits for its reader, and a finished stream answers the reconnect with 204."""

_RETRY = encode_sse_retry(RETRY_MS)


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
        self._first: list[Event] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        follower = self.handle.follower(self._after_seq)
        try:
            # Before any header: a cursor the log no longer covers is an explicit error.
            self._first = follower.take()
        except ResumeUnavailable as exc:
            await error_response(410, "resume_unavailable", str(exc))(scope, receive, send)
            return
        if not self._first and follower.finished:
            # A reconnect at the terminal's id: nothing will ever follow. 204 is what stops
            # a browser's EventSource from reconnecting; a 200 with no events would not.
            await Response(status_code=204)(scope, receive, send)
            return
        headers = [
            *SSE_HEADERS,
            (b"x-tokenwire-stream-id", self.handle.stream_id.encode()),
            *self._extra_headers,
        ]
        # Counted in before the first await: a retry by Idempotency-Key must be the turn's
        # originator before the first connection's drop can apply on_disconnect.
        self.handle.attach()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        except BaseException:
            self.handle.detach(originator=self._originator)
            raise
        pacer = SendPacer(
            self.handle.stream_id,
            heartbeat_s=self._heartbeat_s,
            send_timeout_s=self._send_timeout_s,
            wake=follower.wake,
        )
        writer = asyncio.ensure_future(self._write(send, follower, pacer))
        pacer.start(writer)
        listener = asyncio.ensure_future(wait_disconnect(receive))
        try:
            await asyncio.wait((writer, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            pacer.stop()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            if pacer.slow:
                self._metrics.slow_client_disconnects.inc()
                # Ending the writer leaves the unsent bytes and the socket with the server.
                if not listener.done():
                    await drop_connection(scope, listener)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
            # The turn applies its on_disconnect policy if this reader started it (and it is
            # still running); a viewer leaving never stops it.
            self.handle.detach(originator=self._originator and not self.terminal_sent)

    async def _write(self, send: Send, follower: Follower, pacer: SendPacer) -> None:
        caught_up = False
        first: list[Event] | None = self._first
        prefix = _RETRY  # goes out with the first write, whatever it is
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
                    pacer.slow = True
                    return
            if batch:
                if caught_up and len(batch) > self._max_lag and not follower.finished:
                    logger.info(
                        "stream %s: reader %d events behind; disconnecting it",
                        self.handle.stream_id,
                        len(batch),
                    )
                    pacer.slow = True
                    return
                caught_up = True
                await pacer.send(send, prefix + _frames(batch))
                prefix = b""
                if follower.finished:
                    self.terminal_sent = True
                    break
                continue
            if follower.finished:
                break
            if pacer.heartbeat_due:
                pacer.heartbeat_due = False
                await pacer.send(send, prefix + _HEARTBEAT)
                prefix = b""
                continue
            await follower.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _frames(batch: list[Event]) -> bytes:
    if len(batch) == 1:
        return encode_sse_event(batch[0])
    return b"".join([encode_sse_event(event) for event in batch])
