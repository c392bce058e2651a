"""The WebSocket endpoint: many turns on one socket, told apart by ``request_id``.

One reader loop parses client frames; one forwarder task per turn follows its log and puts
frames into the socket's bounded outbox; one sender task writes the outbox to the socket, so
sends never interleave. A bad message answers its request with an ``error`` and the socket
keeps serving; a frame that is not JSON closes it with 1007, an oversize one with 1009, a binary
one with 1003, a client sending commands faster than its rate with 4008. Closing the socket
applies each of its turns' ``on_disconnect`` policy (default: stop, ``client_gone``).
``resume`` follows a stream from ``after_seq`` as a viewer.

Every command gets exactly one answer. Answers are never dropped: when the outbox is full, the
reader waits for room (back-pressure: the socket's frames stay unread in the kernel) instead.
A ``cancel`` of a turn still starting is remembered and applied once the turn exists, so the
client gets ``start`` … ``done`` (partial, ``cancelled``), as for any cancel. A socket may have
``[limits] max_turns_per_connection`` turns starting or running; past it, ``overloaded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..bus import ResumeUnavailable, UnknownStream
from ..engine import Engine, RequestError, TurnHandle
from ..engine.shares import TokenBucket
from ..protocol import Reason, encode_event_with, is_terminal
from ..protocol.ws import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_RATE_LIMITED,
    CLOSE_UNSUPPORTED_DATA,
    Cancel,
    FrameError,
    Generate,
    MessageError,
    Resume,
    encode_request_error,
    parse_client_message,
)
from .pacing import ABORT_EXTENSION

logger = logging.getLogger("tokenwire.ws")

OUTBOX_FRAMES = 1024
MAX_REMEMBERED = 10_000
CLOSE_POLICY_VIOLATION = 1008


class _Session:
    def __init__(self, websocket: WebSocket, engine: Engine, tenant: str | None) -> None:
        self.ws = websocket
        self.engine = engine
        self.tenant = tenant
        self.outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX_FRAMES)
        self.sending = True
        """False once the sender stopped (the socket is going away): answers are discarded."""
        self.turns: dict[str, TurnHandle] = {}
        self.starting: dict[str, asyncio.Task[None]] = {}
        """Requests whose turn is being started (its conversation's history loading)."""
        self.cancel_on_start: set[str] = set()
        """Requests cancelled while starting: their turn is stopped as soon as it exists."""
        self.own: set[str] = set()
        """Requests whose turn this socket started and still follows."""
        self.refused: dict[str, None] = {}
        """Recent requests answered with an error (a late ``cancel`` of one is not answered)."""
        self.forwarders: dict[str, asyncio.Task[None]] = {}
        self.resuming: dict[str, asyncio.Task[None]] = {}
        """Resumes whose stream is being looked up (on a gateway, a Redis round trip)."""
        self.cancel_on_resume: set[str] = set()
        """Resumes cancelled while being looked up: their turn is cancelled once found."""
        self.started: dict[str, str] = {}
        """request_id → stream_id of every turn this socket started (for ``resume``)."""

    async def send(self, frame: bytes) -> None:
        """Queue a frame for the socket, waiting for room: a frame is never dropped."""
        if self.sending:
            await self.outbox.put(frame)

    async def answer_error(self, request_id: str | None, code: str, message: str) -> None:
        await self.send(encode_request_error(request_id, code, message))

    async def refuse(self, request_id: str, code: str, message: str) -> None:
        """Answer a ``generate`` that gets no turn: its one answer is this error."""
        _remember(self.refused, request_id, None)
        await self.answer_error(request_id, code, message)

    async def generate(self, message: Generate) -> None:
        rid = message.request_id
        if rid in self.turns or rid in self.starting or rid in self.resuming:
            await self.answer_error(
                rid, "duplicate_request_id", f"request {rid!r} is still running"
            )
            return
        in_flight = len(self.starting) + len(self.own)
        limit = self.engine.settings.limits.max_turns_per_connection
        if in_flight >= limit:
            self.engine.metrics.rejected.labels("overloaded").inc()
            await self.refuse(
                rid, "overloaded", f"this connection has {in_flight} turns in flight (the limit)"
            )
            return
        self.refused.pop(rid, None)
        # Started in a task of its own: a turn that loads history must not hold up the
        # socket's other requests.
        task = asyncio.get_running_loop().create_task(self._start(rid, message))
        self.starting[rid] = task

    async def _start(self, rid: str, message: Generate) -> None:
        submit = asyncio.ensure_future(self.engine.submit(message.body, tenant=self.tenant))
        try:
            handle = await asyncio.shield(submit)
        except RequestError as exc:
            self.starting.pop(rid, None)
            self.cancel_on_start.discard(rid)
            await self.refuse(rid, exc.code, exc.message)
            return
        except asyncio.CancelledError:
            # Only the socket closing cancels a start (a client's cancel waits for the turn):
            # a turn that starts anyway has no reader here, so it is stopped at once.
            self.starting.pop(rid, None)
            submit.add_done_callback(_stop_started_turn)
            raise
        except Exception:
            self.starting.pop(rid, None)
            self.cancel_on_start.discard(rid)
            logger.exception("ws: starting a turn failed")
            await self.refuse(rid, "internal_error", "internal error")
            return
        self.starting.pop(rid, None)
        _remember(self.started, rid, handle.stream_id)
        self.own.add(rid)
        self._follow(rid, handle, after_seq=0, originator=True)
        if rid in self.cancel_on_start:
            self.cancel_on_start.discard(rid)
            handle.cancel(Reason.CANCELLED)

    async def resume(self, message: Resume) -> None:
        rid = message.request_id
        if rid in self.turns or rid in self.starting or rid in self.resuming:
            await self.answer_error(
                rid, "duplicate_request_id", f"request {rid!r} is still running"
            )
            return
        stream_id = message.stream_id or self.started.get(rid)
        if stream_id is None:
            await self.answer_error(rid, "unknown_stream", "give the stream_id to resume")
            return
        self.refused.pop(rid, None)
        # In a task: on a gateway, finding the stream is a Redis round trip, which must not
        # hold up the socket's other requests.
        task = asyncio.get_running_loop().create_task(self._resume(rid, stream_id, message))
        self.resuming[rid] = task

    async def _resume(self, rid: str, stream_id: str, message: Resume) -> None:
        refusal: tuple[str, str] | None = None
        try:
            handle = await self.engine.lookup(stream_id, tenant=self.tenant)
            if message.after_seq > handle.head:
                refusal = ("invalid_request", "after_seq is ahead of the stream")
            else:
                handle.follower(message.after_seq).take()  # is the cursor still covered?
        except UnknownStream:
            refusal = ("unknown_stream", f"no stream {stream_id!r} is held")
        except ResumeUnavailable as exc:
            refusal = ("resume_unavailable", str(exc))
        except RequestError as exc:
            refusal = (exc.code, exc.message)
        except Exception:
            logger.exception("ws: resuming a stream failed")
            refusal = ("internal_error", "internal error")
        finally:
            self.resuming.pop(rid, None)
        if refusal is not None:
            self.cancel_on_resume.discard(rid)
            await self.refuse(rid, *refusal)
            return
        self._follow(rid, handle, after_seq=message.after_seq, originator=False)
        if rid in self.cancel_on_resume:
            self.cancel_on_resume.discard(rid)
            handle.cancel(Reason.CANCELLED)

    def _follow(self, rid: str, handle: TurnHandle, *, after_seq: int, originator: bool) -> None:
        self.turns[rid] = handle
        handle.attach()
        self.forwarders[rid] = asyncio.get_running_loop().create_task(
            self._forward(rid, handle, after_seq, originator)
        )

    async def cancel(self, message: Cancel) -> None:
        rid = message.request_id
        if rid in self.starting:
            # Not cancelled as a task: a task cancelled before its first step never runs, and
            # the request would get no answer at all. The turn is stopped once it exists.
            self.cancel_on_start.add(rid)
            return
        if rid in self.resuming:
            # The turn exists; the cancel is for it, once this socket has found it.
            self.cancel_on_resume.add(rid)
            return
        handle = self.turns.get(rid)
        if handle is not None:
            handle.cancel(Reason.CANCELLED)
            return
        if rid in self.started or rid in self.refused:
            return  # it already ended, and its answer (terminal or error) went out
        await self.answer_error(rid, "unknown_request", "no turn with that request_id is running")

    async def _forward(
        self, rid: str, handle: TurnHandle, after_seq: int, originator: bool
    ) -> None:
        finished = False
        try:
            async for batch in handle.batches(after_seq):
                for event in batch:
                    await self.send(encode_event_with(event, request_id=rid))
                if is_terminal(batch[-1]):
                    finished = True
                    return
        finally:
            self.turns.pop(rid, None)
            self.forwarders.pop(rid, None)
            if originator:
                self.own.discard(rid)
            # The socket went away (or the forward failed) before the end: the turn applies
            # its on_disconnect policy if this socket started it.
            handle.detach(originator=originator and not finished)

    async def send_loop(self, send_timeout_s: float) -> None:
        try:
            while True:
                frame = await self.outbox.get()
                try:
                    async with asyncio.timeout(send_timeout_s):
                        await self.ws.send_text(frame.decode())
                except TimeoutError:
                    logger.info("ws send blocked for %.0f s; closing the socket", send_timeout_s)
                    self.engine.metrics.slow_client_disconnects.inc()
                    self._stop_sending()
                    await self.close_turns()
                    # A close frame would queue behind the megabytes this reader does not
                    # take: reset the connection instead, where the server lets us.
                    abort = self.ws.scope.get("extensions", {}).get(ABORT_EXTENSION)
                    if abort is not None:
                        abort()
                        return
                    with contextlib.suppress(Exception):
                        await self.ws.close(code=CLOSE_POLICY_VIOLATION, reason="slow client")
                    return
                finally:
                    self.outbox.task_done()
        finally:
            self._stop_sending()

    def _stop_sending(self) -> None:
        """Nobody drains the outbox any more: empty it, so that whoever waits for room (the
        reader, a forwarder) is let go, and discard what comes after."""
        self.sending = False
        while not self.outbox.empty():
            self.outbox.get_nowait()
            self.outbox.task_done()

    async def close_turns(self) -> None:
        tasks = [*self.starting.values(), *self.resuming.values(), *self.forwarders.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _remember(table: dict[str, Any], key: str, value: Any) -> None:
    """Keep ``key`` (most recent last), forgetting the oldest past ``MAX_REMEMBERED``."""
    table.pop(key, None)
    table[key] = value
    if len(table) > MAX_REMEMBERED:
        table.pop(next(iter(table)))


def _stop_started_turn(submit: asyncio.Future[TurnHandle]) -> None:
    if not submit.cancelled() and submit.exception() is None:
        submit.result().cancel(Reason.CANCELLED)


async def serve_websocket(
    websocket: WebSocket,
    engine: Engine,
    *,
    tenant: str | None = None,
    subprotocol: str | None = None,
) -> None:
    """Serve one socket; ``tenant``: whom it was authenticated as (None without auth);
    ``subprotocol``: the one to select in the handshake, if any."""
    await websocket.accept(subprotocol=subprotocol)
    session = _Session(websocket, engine, tenant)
    limits = engine.settings.limits
    sender = asyncio.get_running_loop().create_task(
        session.send_loop(limits.slow_client_send_timeout_s)
    )
    limit = limits.max_ws_frame_bytes
    loop = asyncio.get_running_loop()
    bucket = (
        TokenBucket(limits.ws_commands_per_s, limits.ws_command_burst, loop.time())
        if limits.ws_commands_per_s > 0
        else None
    )
    close_code: int | None = None
    close_reason = ""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                close_code = CLOSE_UNSUPPORTED_DATA
                break
            if len(text) > limit or len(text.encode()) > limit:
                close_code = CLOSE_MESSAGE_TOO_BIG
                break
            if bucket is not None and not bucket.take(loop.time()):
                close_code, close_reason = CLOSE_RATE_LIMITED, "too many commands"
                engine.metrics.rejected.labels("ws_rate_limited").inc()
                break
            try:
                parsed = parse_client_message(text)
            except FrameError as exc:
                close_code = exc.close_code
                break
            except MessageError as exc:
                await session.answer_error(exc.request_id, exc.code, exc.message)
                continue
            if isinstance(parsed, Generate):
                await session.generate(parsed)
            elif isinstance(parsed, Cancel):
                await session.cancel(parsed)
            elif isinstance(parsed, Resume):
                await session.resume(parsed)
    except WebSocketDisconnect:
        pass
    finally:
        await session.close_turns()
        if close_code is not None:
            # Let the answers already queued go out before the close frame.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await session.outbox.join()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        if close_code is not None:
            with contextlib.suppress(Exception):
                await websocket.close(code=close_code, reason=close_reason)
