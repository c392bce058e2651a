"""The WebSocket endpoint: many turns on one socket, told apart by ``request_id``.

One reader loop parses client frames; one forwarder task per turn follows its log and puts
frames into the socket's bounded outbox; one sender task writes the outbox to the socket, so
sends never interleave. A bad message answers its request with an ``error`` and the socket
keeps serving; a frame that is not JSON closes it with 1007, an oversize one with 1009, a binary
one with 1003. Closing the socket applies each of its turns' ``on_disconnect`` policy
(default: stop, ``client_gone``). ``resume`` follows a stream from ``after_seq`` as a viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..bus import ResumeUnavailable, UnknownStream
from ..engine import Engine, RequestError, TurnHandle
from ..protocol import Reason, encode_event_with, is_terminal
from ..protocol.ws import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_UNSUPPORTED_DATA,
    Cancel,
    FrameError,
    Generate,
    MessageError,
    Resume,
    encode_request_error,
    parse_client_message,
)

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
        self.turns: dict[str, TurnHandle] = {}
        self.starting: dict[str, asyncio.Task[None]] = {}
        """Requests whose turn is being started (its conversation's history loading)."""
        self.forwarders: dict[str, asyncio.Task[None]] = {}
        self.resuming: dict[str, asyncio.Task[None]] = {}
        """Resumes whose stream is being looked up (on a gateway, a Redis round trip)."""
        self.cancel_on_resume: set[str] = set()
        """Resumes cancelled while being looked up: their turn is cancelled once found."""
        self.started: dict[str, str] = {}
        """request_id → stream_id of every turn this socket started (for ``resume``)."""

    def answer_error(self, request_id: str | None, code: str, message: str) -> None:
        try:
            self.outbox.put_nowait(encode_request_error(request_id, code, message))
        except asyncio.QueueFull:
            logger.info("ws outbox full; dropping an error answer for %s", request_id)

    def generate(self, message: Generate) -> None:
        rid = message.request_id
        if rid in self.turns or rid in self.starting:
            self.answer_error(rid, "duplicate_request_id", f"request {rid!r} is still running")
            return
        # Started in a task of its own: a turn that loads history must not hold up the
        # socket's other requests.
        task = asyncio.get_running_loop().create_task(self._start(rid, message))
        self.starting[rid] = task

    async def _start(self, rid: str, message: Generate) -> None:
        submit = asyncio.ensure_future(self.engine.submit(message.body, tenant=self.tenant))
        try:
            handle = await asyncio.shield(submit)
        except RequestError as exc:
            self.answer_error(rid, exc.code, exc.message)
            return
        except asyncio.CancelledError:
            # Cancelled (or the socket closed) while starting: a turn that starts anyway
            # has no reader here, so it is stopped at once rather than left running.
            submit.add_done_callback(_stop_started_turn)
            self.answer_error(rid, "cancelled", "cancelled before the turn started")
            raise
        except Exception:
            logger.exception("ws: starting a turn failed")
            self.answer_error(rid, "internal_error", "internal error")
            return
        finally:
            self.starting.pop(rid, None)
        self.started[rid] = handle.stream_id
        if len(self.started) > MAX_REMEMBERED:
            self.started.pop(next(iter(self.started)))
        self._follow(rid, handle, after_seq=0, originator=True)

    def resume(self, message: Resume) -> None:
        rid = message.request_id
        if rid in self.turns or rid in self.starting or rid in self.resuming:
            self.answer_error(rid, "duplicate_request_id", f"request {rid!r} is still running")
            return
        stream_id = message.stream_id or self.started.get(rid)
        if stream_id is None:
            self.answer_error(rid, "unknown_stream", "give the stream_id to resume")
            return
        # In a task: on a gateway, finding the stream is a Redis round trip, which must not
        # hold up the socket's other requests.
        task = asyncio.get_running_loop().create_task(self._resume(rid, stream_id, message))
        self.resuming[rid] = task

    async def _resume(self, rid: str, stream_id: str, message: Resume) -> None:
        try:
            handle = await self.engine.lookup(stream_id, tenant=self.tenant)
            if message.after_seq > handle.head:
                self.answer_error(rid, "invalid_request", "after_seq is ahead of the stream")
                return
            handle.follower(message.after_seq).take()  # check the cursor is still covered
        except UnknownStream:
            self.answer_error(rid, "unknown_stream", f"no stream {stream_id!r} is held")
            return
        except ResumeUnavailable as exc:
            self.answer_error(rid, "resume_unavailable", str(exc))
            return
        except RequestError as exc:
            self.answer_error(rid, exc.code, exc.message)
            return
        except Exception:
            logger.exception("ws: resuming a stream failed")
            self.answer_error(rid, "internal_error", "internal error")
            return
        finally:
            self.resuming.pop(rid, None)
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

    def cancel(self, message: Cancel) -> None:
        starting = self.starting.get(message.request_id)
        if starting is not None:
            starting.cancel()
            return
        if message.request_id in self.resuming:
            # The turn exists; the cancel is for it, once this socket has found it.
            self.cancel_on_resume.add(message.request_id)
            return
        handle = self.turns.get(message.request_id)
        if handle is None:
            self.answer_error(
                message.request_id, "unknown_request", "no turn with that request_id is running"
            )
            return
        handle.cancel(Reason.CANCELLED)

    async def _forward(
        self, rid: str, handle: TurnHandle, after_seq: int, originator: bool
    ) -> None:
        finished = False
        try:
            async for batch in handle.batches(after_seq):
                for event in batch:
                    await self.outbox.put(encode_event_with(event, request_id=rid))
                if is_terminal(batch[-1]):
                    finished = True
                    return
        finally:
            self.turns.pop(rid, None)
            self.forwarders.pop(rid, None)
            # The socket went away (or the forward failed) before the end: the turn applies
            # its on_disconnect policy if this socket started it.
            handle.detach(originator=originator and not finished)

    async def send_loop(self, send_timeout_s: float) -> None:
        while True:
            frame = await self.outbox.get()
            try:
                async with asyncio.timeout(send_timeout_s):
                    await self.ws.send_text(frame.decode())
            except TimeoutError:
                logger.info("ws send blocked for %.0f s; closing the socket", send_timeout_s)
                self.engine.metrics.slow_client_disconnects.inc()
                await self.close_turns()
                with contextlib.suppress(Exception):
                    await self.ws.close(code=CLOSE_POLICY_VIOLATION, reason="slow client")
                return
            finally:
                self.outbox.task_done()

    async def close_turns(self) -> None:
        tasks = [*self.starting.values(), *self.resuming.values(), *self.forwarders.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


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
    close_code: int | None = None
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
            try:
                parsed = parse_client_message(text)
            except FrameError as exc:
                close_code = exc.close_code
                break
            except MessageError as exc:
                session.answer_error(exc.request_id, exc.code, exc.message)
                continue
            if isinstance(parsed, Generate):
                session.generate(parsed)
            elif isinstance(parsed, Cancel):
                session.cancel(parsed)
            elif isinstance(parsed, Resume):
                session.resume(parsed)
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
                await websocket.close(code=close_code)
