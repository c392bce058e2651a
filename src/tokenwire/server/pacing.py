"""The pacing of one streaming response: heartbeats and the send timeout.

Timekeeping costs one timer per connection per tick, never one per event: a watchdog wakes every
``tick_s`` to ask for a heartbeat comment when nothing was written for ``heartbeat_s``, and to
cancel the writer whose send has been blocked (TCP back-pressure) for ``send_timeout_s``. Shared
by every response that follows a turn's log (:mod:`.sse`, :mod:`.openai_response`), so a slow
reader is treated the same whichever protocol it speaks.

Giving up on a reader must also free its connection. Cancelling the writer is not enough: the
server still holds the bytes it could not send (megabytes, in its transport and the kernel),
and a graceful close waits for the reader to take them, i.e. forever. So the outermost layer
of the app records how to abort the connection (:func:`remember_connection`, in the scope's
``extensions``) and :func:`drop_connection` aborts it with a reset, which returns that memory
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

logger = logging.getLogger("tokenwire.sse")


class SendPacer:
    """Writes the body of one streaming response and watches over its sends."""

    def __init__(
        self,
        stream_id: str,
        *,
        heartbeat_s: float,
        send_timeout_s: float,
        wake: Callable[[], None],
    ) -> None:
        self._stream_id = stream_id
        self._heartbeat_s = heartbeat_s
        self._send_timeout_s = send_timeout_s
        self._wake = wake
        self.slow = False
        """True once this reader was found too slow (and disconnected)."""
        self.heartbeat_due = False
        """Set by the watchdog; the writer sends a heartbeat and clears it."""
        self._writer: asyncio.Future[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_write = 0.0
        self._send_started: float | None = None

    def start(self, writer: asyncio.Future[None]) -> None:
        """Watch ``writer`` (cancelled when one of its sends blocks too long)."""
        loop = asyncio.get_running_loop()
        self._writer = writer
        self._last_write = loop.time()
        tick_s = min(self._heartbeat_s, self._send_timeout_s) / 4
        self._watchdog = loop.call_later(tick_s, self._tick, tick_s)

    def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def send(self, send: Send, body: bytes) -> None:
        """One more part of the body (``more_body``), timed for the watchdog."""
        loop = asyncio.get_running_loop()
        self._send_started = loop.time()
        await send({"type": "http.response.body", "body": body, "more_body": True})
        self._send_started = None
        self._last_write = loop.time()

    def _tick(self, tick_s: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        writer = self._writer
        if writer is None or writer.done():
            return
        if self._send_started is not None and now - self._send_started >= self._send_timeout_s:
            logger.info(
                "stream %s: a send blocked for %.0f s; disconnecting the reader",
                self._stream_id,
                now - self._send_started,
            )
            self.slow = True
            writer.cancel()
            return
        if self._send_started is None and now - self._last_write >= self._heartbeat_s:
            self.heartbeat_due = True
            self._wake()
        self._watchdog = loop.call_later(tick_s, self._tick, tick_s)


async def wait_disconnect(receive: Receive) -> None:
    """Returns when the client has gone (``http.disconnect``)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


ABORT_EXTENSION = "tokenwire.abort"
"""The scope extension holding a zero-argument callable that resets the connection."""

_RESET_LINGER = struct.pack("ii", 1, 0)
"""SO_LINGER on, 0 s: closing sends RST and discards the unsent bytes in the kernel too."""


def remember_connection(scope: Scope, send: Send) -> None:
    """Record how to reset the connection of ``scope``, if the server's own ``send`` exposes
    its transport (uvicorn's HTTP and WebSocket protocols do). Call it where ``send`` is still
    the server's, at the outside of the app; inside, middleware has wrapped it."""
    transport: Any = getattr(getattr(send, "__self__", None), "transport", None)
    if isinstance(transport, asyncio.WriteTransport):
        scope.setdefault("extensions", {})[ABORT_EXTENSION] = lambda: _reset(transport)


async def drop_connection(scope: Scope, disconnected: asyncio.Future[None]) -> bool:
    """Reset the connection of a reader the server gave up on, and wait until the server has
    seen it go (``disconnected``: the task waiting for ``http.disconnect``). False when the
    server offers no way to (an app mounted in another one): the response just ends."""
    abort = scope.get("extensions", {}).get(ABORT_EXTENSION)
    if abort is None:
        return False
    abort()
    # Bounded only against a server that never reports the reset: uvicorn does at once.
    with contextlib.suppress(Exception):
        await asyncio.wait({disconnected}, timeout=5)
    return True


def _reset(transport: asyncio.WriteTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
    transport.abort()
