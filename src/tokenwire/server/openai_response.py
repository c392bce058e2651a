"""The ASGI response of ``POST /v1/chat/completions``: one turn, to the client that started it,
as OpenAI ``chat.completion.chunk`` SSE or as one ``chat.completion``.

Like :mod:`.sse`, it races the body against ``http.disconnect``: when the client goes first, the
turn applies its ``on_disconnect`` policy (``cancel``: stopped now, ``client_gone``, which
aborts the upstream) — for a non-streamed request too, whose client is waiting for one body.

**When the status line goes out.** Once a 200 is sent, a failure can only be told in the body;
before, it can be told the way every HTTP client understands. So a streamed response holds its
headers until the turn shows how it begins (its first event past ``start`` and ``status``: text,
or its terminal event), or for at most ``hold_s`` (the heartbeat interval: what a client would
otherwise wait for its first keep-alive). A turn that fails before any output (``error``, or a
stop before any text) gets an HTTP status (:func:`~.openai_translator.failure`: 502, 504, 503,
499) and the SDK raises its usual exception, retrying only when ``x-should-retry`` says so;
everything later is told in the stream (an error object, never ``finish_reason: "stop"``).
After the headers, heartbeat comments keep the connection alive, and a reader whose send stays
blocked ``send_timeout_s``, or that falls ``max_lag_events`` behind, is disconnected: the same
:class:`~.pacing.SendPacer` as :mod:`.sse`.

A non-streamed request is answered once the turn has ended: 200 and the completion for a whole
answer, the failure status otherwise (with the partial answer inside the error object: a
client that checks only the status never takes half an answer for a whole one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..bus import Follower, ResumeUnavailable, UnknownStream, follow
from ..engine import TurnHandle
from ..engine.metrics import EngineMetrics
from ..protocol import Done, Error, Event, Start, encode_sse_comment
from .openai_request import ChatRequest
from .openai_translator import (
    ChunkTranslator,
    completion,
    encode_frames,
    error_object,
    error_type,
    failure,
    opening_event,
    whole,
)
from .pacing import SendPacer, drop_connection, wait_disconnect
from .sse import SSE_HEADERS

logger = logging.getLogger("tokenwire.openai")

_HEARTBEAT = encode_sse_comment("keep-alive")


class ChatCompletionResponse(Response):
    """One turn as an OpenAI Chat Completions response (streamed or not)."""

    def __init__(
        self,
        handle: TurnHandle,
        request: ChatRequest,
        *,
        metrics: EngineMetrics,
        hold_s: float,
        heartbeat_s: float,
        send_timeout_s: float,
        max_lag_events: int,
        originator: bool = True,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=200)
        self.handle = handle
        self.chat = request
        self._metrics = metrics
        self._hold_s = hold_s
        self._heartbeat_s = heartbeat_s
        self._send_timeout_s = send_timeout_s
        self._max_lag = max_lag_events
        self._originator = originator
        self._stream_headers = [
            (b"x-tokenwire-stream-id", handle.stream_id.encode()),
            *(
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in (extra_headers or {}).items()
            ),
        ]
        self.delivered = False
        """True once the client was sent the end of the turn (its terminal, translated)."""
        self._follower: Follower | None = None
        self._pacer: SendPacer | None = None
        self._slow = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self._follower = self.handle.follower(0)
        except (UnknownStream, ResumeUnavailable):
            # A turn joined by its Idempotency-Key whose first events are no longer held.
            message = "this Idempotency-Key's turn can no longer be replayed from its start"
            expired = error_object(message, kind=error_type(410), code="resume_unavailable")
            await self._json(send, 410, expired)
            return
        self.handle.attach()
        body = self._stream(send) if self.chat.stream else self._complete(send)
        writer = asyncio.ensure_future(body)
        listener = asyncio.ensure_future(wait_disconnect(receive))
        try:
            await asyncio.wait((writer, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone = listener.done()
            if self._pacer is not None:
                self._pacer.stop()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            slow = self._slow or (self._pacer is not None and self._pacer.slow)
            if slow and not gone:
                # As in sse.py: the reader's unsent bytes and socket must go with it.
                await drop_connection(scope, listener)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
            # A write to a client that left may fail; any other failure is a bug to see.
            if not gone and not writer.cancelled() and writer.exception() is not None:
                logger.error(
                    "stream %s: the chat completion response failed",
                    self.handle.stream_id,
                    exc_info=writer.exception(),
                )
            if slow:
                self._metrics.slow_client_disconnects.inc()
            # The client that started the turn went away before its end: on_disconnect applies.
            self.handle.detach(originator=self._originator and not self.delivered)

    # -- not streamed ----------------------------------------------------------------------

    async def _complete(self, send: Send) -> None:
        assert self._follower is not None
        created = 0
        last: Event | None = None
        async for batch in follow(self._follower):
            for event in batch:
                if isinstance(event, Start):
                    created = int(event.created_at)
            last = batch[-1]
        assert isinstance(last, Done | Error), "a stream always ends with its terminal event"
        if whole(last):
            assert isinstance(last, Done)
            await self._json(send, 200, completion(last, model=self.chat.model, created=created))
        else:
            answer = failure(last)
            await self._json(send, answer.status, answer.body, answer.headers)

    async def _json(
        self,
        send: Send,
        status: int,
        body: dict[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        raw = orjson.dumps(body)
        head = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            *self._stream_headers,
            *(
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in (headers or {}).items()
            ),
        ]
        try:
            async with asyncio.timeout(self._send_timeout_s):
                await send({"type": "http.response.start", "status": status, "headers": head})
                await send({"type": "http.response.body", "body": raw, "more_body": False})
        except TimeoutError:
            self._slow = True
            return
        self.delivered = True

    # -- streamed --------------------------------------------------------------------------

    async def _stream(self, send: Send) -> None:
        follower = self._follower
        assert follower is not None
        loop = asyncio.get_running_loop()
        held = await self._hold(follower, loop)
        opening = opening_event(held)
        if isinstance(opening, Done | Error) and not whole(opening):
            # Ended before any output, and no byte sent yet: say it with the status.
            answer = failure(opening)
            await self._json(send, answer.status, answer.body, answer.headers)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*SSE_HEADERS, *self._stream_headers],
            }
        )
        translator = ChunkTranslator(
            self.handle.stream_id, model=self.chat.model, include_usage=self.chat.include_usage
        )
        frames = translator.feed(held)
        frames += translator.open()
        writer = asyncio.current_task()
        assert writer is not None
        self._pacer = pacer = SendPacer(
            self.handle.stream_id,
            heartbeat_s=self._heartbeat_s,
            send_timeout_s=self._send_timeout_s,
            wake=follower.wake,
        )
        pacer.start(writer)
        await pacer.send(send, encode_frames(frames))
        while not translator.finished:
            try:
                batch = follower.take()
            except ResumeUnavailable:
                # So far behind that the log trimmed what this reader had not read.
                logger.info("stream %s: reader fell out of the log", self.handle.stream_id)
                self._slow = True
                return
            if batch:
                if len(batch) > self._max_lag and not follower.finished:
                    logger.info(
                        "stream %s: reader %d events behind; disconnecting it",
                        self.handle.stream_id,
                        len(batch),
                    )
                    self._slow = True
                    return
                frames = translator.feed(batch)
                if frames:
                    await pacer.send(send, encode_frames(frames))
                continue
            if pacer.heartbeat_due:
                pacer.heartbeat_due = False
                await pacer.send(send, _HEARTBEAT)
                continue
            await follower.wait()
        self.delivered = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _hold(self, follower: Follower, loop: asyncio.AbstractEventLoop) -> list[Event]:
        """The events up to the first that shows how the turn begins (or all there are when
        ``hold_s`` ran out first)."""
        held: list[Event] = []
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            follower.wake()

        # A flag, not a clock comparison: a timer may fire a hair early, and a wait after it
        # would have nothing left to wake it.
        timer = loop.call_later(self._hold_s, expire)
        try:
            while True:
                held += follower.take()
                if follower.finished or expired or opening_event(held) is not None:
                    return held
                await follower.wait()
        finally:
            timer.cancel()
