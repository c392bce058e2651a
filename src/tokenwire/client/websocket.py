"""The WebSocket client: many turns at once on one socket (``/v1/ws``), each its own stream
of events, told apart by ``request_id``.

One reader task owns the socket: it parses each frame and hands it to its turn's queue, so a
turn you do not read never holds up the others (a turn's queue holds at most its own events,
which the server bounds). When the socket drops, the reader reconnects (with the
:class:`ResumePolicy` backoff) and sends ``resume`` for every turn the server had started,
from the last event each one delivered; a turn whose ``start`` had not arrived yet cannot be
found again and fails with :class:`ResumeError`.

Needs the ``websockets`` package (imported when a session is opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from types import TracebackType
from typing import TYPE_CHECKING, Any, Unpack

import orjson

from ..protocol import Done, Error, Event
from ..protocol.ws import CLOSE_INVALID_PAYLOAD, CLOSE_UNSUPPORTED_DATA
from .cursor import StreamCursor
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    ResumeError,
    ServerProtocolError,
    TokenwireError,
    TurnError,
)
from .options import ClientOptions, TurnParams, turn_body
from .resume import RETRYABLE_STATUSES, ResumePolicy

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

_FATAL_CLOSE_CODES = frozenset({CLOSE_UNSUPPORTED_DATA, CLOSE_INVALID_PAYLOAD})
"""The server closed because this client sent frames it cannot read: reconnecting to send
more of the same would not help."""


class AsyncWebSocketSession:
    """One socket, many turns. Open it with ``async with client.websocket() as ws``; then
    ``turn = await ws.generate(...)`` starts a turn and returns at once, and each turn is an
    async iterator of its own events. Leaving the ``async with`` cancels the turns it started
    that have not ended and closes the socket."""

    def __init__(
        self,
        options: ClientOptions,
        policy: ResumePolicy,
        *,
        max_message_bytes: int,
        open_timeout: float,
    ) -> None:
        self._options = options
        self._policy = policy
        self._max_message_bytes = max_message_bytes
        self._open_timeout = open_timeout
        self._socket: ClientConnection | None = None
        self._connected = False
        """False while the reader reconnects: sends wait for the new socket."""
        self._changed = asyncio.Event()
        """Set (then replaced) when the socket is swapped or the session ends."""
        self._reader: asyncio.Task[None] | None = None
        self._turns: dict[str, WebSocketTurn] = {}
        self._ids = itertools.count(1)
        self._session_error: APIError | None = None
        """The server's answer to the socket itself (e.g. ``unauthorized``), before it closed."""
        self._failure: TokenwireError | None = None
        self._closing = False

    async def connect(self) -> None:
        """Open the socket (``async with`` does this)."""
        if self._socket is not None:
            raise RuntimeError("the session is already open")
        self._socket = await self._open()
        self._connected = True
        self._reader = asyncio.get_running_loop().create_task(self._run_reader())

    async def generate(
        self,
        prompt: str | None = None,
        *,
        request_id: str | None = None,
        cancel_on_close: bool = True,
        **params: Unpack[TurnParams],
    ) -> WebSocketTurn:
        """Start a turn (a ``generate`` message); its events arrive on the returned turn.

        As over HTTP, the request says ``"on_disconnect": "continue"`` (unless you pass
        ``on_disconnect="cancel"``), so a dropped socket's turns survive to be resumed. A
        ``request_id`` of your own must not be one of a turn still running on this session.
        """
        body = turn_body(prompt, params)
        turn = self._register(
            request_id,
            StreamCursor(),
            owner=not body.get("background", False),
            cancel_on_close=cancel_on_close,
        )
        await self._send_for(turn, {"type": "generate", "request_id": turn.request_id, **body})
        return turn

    async def resume(
        self, stream_id: str, *, after: int = 0, request_id: str | None = None
    ) -> WebSocketTurn:
        """Follow any stream from after event ``after``, as a viewer (leaving never stops it).
        An unknown stream, or a cursor the server no longer holds, fails the turn with
        :class:`APIError` (``unknown_stream``, ``resume_unavailable``)."""
        turn = self._register(
            request_id, StreamCursor(stream_id, after_seq=after), owner=False, cancel_on_close=False
        )
        message = {
            "type": "resume",
            "request_id": turn.request_id,
            "after_seq": after,
            "stream_id": stream_id,
        }
        await self._send_for(turn, message)
        return turn

    async def aclose(self) -> None:
        """Cancel the turns this session started that have not ended (unless they said
        ``cancel_on_close=False``), close the socket, and end every turn still open with
        :class:`APIConnectionError`. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._socket is not None and self._connected:
            for turn in list(self._turns.values()):
                if turn._cancel_on_close:
                    message = _frame({"type": "cancel", "request_id": turn.request_id})
                    with contextlib.suppress(Exception):
                        await self._socket.send(message)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader  # its failure, if any, already ended the turns
        if self._socket is not None:  # the reader may have swapped it while reconnecting
            with contextlib.suppress(Exception):
                await self._socket.close()
        self._end(APIConnectionError("the session was closed"))

    async def __aenter__(self) -> AsyncWebSocketSession:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the turns' side -------------------------------------------------------------------

    def _register(
        self, request_id: str | None, cursor: StreamCursor, *, owner: bool, cancel_on_close: bool
    ) -> WebSocketTurn:
        rid = request_id if request_id is not None else f"r{next(self._ids)}"
        if rid in self._turns:
            raise ValueError(f"request_id {rid!r} belongs to a turn still running")
        turn = WebSocketTurn(
            self, rid, cursor, owner=owner, cancel_on_close=cancel_on_close and owner
        )
        self._turns[rid] = turn
        return turn

    async def _send_for(self, turn: WebSocketTurn, message: dict[str, Any]) -> None:
        try:
            await self._send(message)
        except BaseException:
            self._forget(turn)
            raise
        turn._sent = True

    async def _send(self, message: dict[str, Any]) -> None:
        """Send on the current socket; while the reader reconnects, wait for the new one. A
        frame refused because the socket had closed was not sent, so it goes on the next."""
        from websockets.exceptions import ConnectionClosed

        while True:
            if self._failure is not None:
                raise self._failure
            if self._closing:
                raise APIConnectionError("the session was closed")
            socket, changed = self._socket, self._changed
            if socket is None:
                raise RuntimeError("the session is not open: use `async with client.websocket()`")
            if self._connected:
                try:
                    await socket.send(_frame(message))
                    return
                except ConnectionClosed:
                    pass
            await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _forget(self, turn: WebSocketTurn) -> None:
        if self._turns.get(turn.request_id) is turn:
            del self._turns[turn.request_id]

    # -- the reader ------------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        headers = self._options.request_headers()
        user_agent = headers.pop("User-Agent", None)
        try:
            return await connect(
                self._options.ws_url("/v1/ws"),
                additional_headers=headers,
                user_agent_header=user_agent,
                max_size=self._max_message_bytes,
                open_timeout=self._open_timeout,
            )
        except InvalidStatus as exc:
            answer = exc.response
            raise APIStatusError.from_response(
                answer.status_code, dict(answer.headers.raw_items()), bytes(answer.body or b"")
            ) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise APIConnectionError(
                f"could not open the socket ({type(exc).__name__}: {exc})"
            ) from exc

    async def _run_reader(self) -> None:
        try:
            await self._read_loop()
        except Exception as exc:
            # A bug here must not leave the turns waiting forever.
            failure = APIConnectionError(f"the session's reader failed: {exc!r}")
            failure.__cause__ = exc
            self._end(failure)
            raise

    async def _read_loop(self) -> None:
        from websockets.exceptions import ConnectionClosed

        failures = 0
        while True:
            socket = self._socket
            assert socket is not None
            try:
                async for frame in socket:
                    failures = 0
                    self._dispatch(frame)
            except ConnectionClosed:
                pass
            except ServerProtocolError as exc:
                self._end(exc)
                await socket.close(CLOSE_INVALID_PAYLOAD)
                return
            if self._closing:
                return
            fatal = self._fatal(socket)
            if fatal is not None:
                self._end(fatal)
                return
            self._connected = False
            lost = f"the socket closed ({socket.close_code} {socket.close_reason})"
            for turn in list(self._turns.values()):
                if turn._sent and turn.stream_id is None:
                    cause = APIConnectionError(lost)
                    turn._fail(turn._lost(cause, "the turn had not started: it cannot be found"))
            reconnected = await self._reconnect(failures, lost)
            if reconnected is None:
                return
            socket, failures = reconnected
            self._socket = socket
            for turn in list(self._turns.values()):
                if not turn._sent or turn.stream_id is None:
                    continue  # its message waits in `_send`, for this socket
                turn._resuming = True
                messages = [
                    {
                        "type": "resume",
                        "request_id": turn.request_id,
                        "after_seq": turn.last_event_id,
                        "stream_id": turn.stream_id,
                    }
                ]
                if turn._cancel_requested:  # that cancel may have died with the old socket
                    messages.append({"type": "cancel", "request_id": turn.request_id})
                with contextlib.suppress(ConnectionClosed):
                    for message in messages:
                        await socket.send(_frame(message))
            self._connected = True
            self._notify()
            if not self._turns:
                failures = 0

    async def _reconnect(self, failures: int, lost: str) -> tuple[ClientConnection, int] | None:
        """A new socket and the failures in a row so far, or None when the session ended
        (every attempt failed)."""
        error: TokenwireError = APIConnectionError(lost)
        attempt = failures
        while True:
            attempt += 1
            if attempt > self._policy.max_attempts:
                self._end(error, lost=True)
                return None
            await asyncio.sleep(self._policy.delay(attempt))
            try:
                return await self._open(), attempt
            except APIStatusError as exc:
                if exc.status not in RETRYABLE_STATUSES:
                    self._end(exc, lost=True)
                    return None
                error = exc
            except APIConnectionError as exc:
                error = exc

    def _fatal(self, socket: ClientConnection) -> TokenwireError | None:
        if self._session_error is not None:
            return self._session_error
        code = socket.close_code
        if code in _FATAL_CLOSE_CODES:
            return APIConnectionError(
                f"the server closed the socket ({code} {socket.close_reason}): it could not "
                "read this client's frames"
            )
        return None

    def _dispatch(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            raise ServerProtocolError("a binary frame")
        try:
            data = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise ServerProtocolError(f"a frame that is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ServerProtocolError("a frame that is not a JSON object")
        rid = data.pop("request_id", None)
        if data.get("type") == "error" and "seq" not in data:
            # The answer to a message that could not be served, not a turn's `error` event.
            error = APIError(str(data.get("code")), str(data.get("message")))
            if rid is None:
                self._session_error = error
                return
            rejected = self._turns.get(rid) if isinstance(rid, str) else None
            if rejected is not None:
                rejected._reject(error)
            return
        turn = self._turns.get(rid) if isinstance(rid, str) else None
        if turn is not None:  # else a turn closed on this side: the rest of it is not wanted
            turn._deliver(data)

    def _end(self, error: TokenwireError, *, lost: bool = False) -> None:
        """The session cannot go on: every open turn ends (``lost``: with a
        :class:`ResumeError` of its own, chained to ``error``)."""
        if self._failure is None:
            self._failure = error
        for turn in list(self._turns.values()):
            turn._fail(turn._lost(error, "every reconnection failed") if lost else error)
        self._notify()


class WebSocketTurn:
    """One turn of a :class:`AsyncWebSocketSession`: an async iterator of its events, in
    order, each once (also across reconnections), ending after the terminal one. A failure
    (the request refused, the stream lost) is raised from the iteration."""

    def __init__(
        self,
        session: AsyncWebSocketSession,
        request_id: str,
        cursor: StreamCursor,
        *,
        owner: bool,
        cancel_on_close: bool,
    ) -> None:
        self.request_id = request_id
        self._session = session
        self._cursor = cursor
        self._owner = owner
        self._cancel_on_close = cancel_on_close
        self._queue: asyncio.Queue[Event | TokenwireError] = asyncio.Queue()
        self._ended = False
        """Nothing more will be queued (terminal event, failure, or closed here)."""
        self._exhausted = False
        self._sent = False
        """Its ``generate``/``resume`` went out on a socket."""
        self._cancel_requested = False
        self._resuming = False
        """Its stream is being resumed on a new socket: a refusal is a :class:`ResumeError`."""

    @property
    def stream_id(self) -> str | None:
        """Known once the ``start`` event arrived."""
        return self._cursor.stream_id

    @property
    def last_event_id(self) -> int:
        return self._cursor.last_seq

    @property
    def terminal(self) -> Done | Error | None:
        return self._cursor.terminal

    def __aiter__(self) -> WebSocketTurn:
        return self

    async def __anext__(self) -> Event:
        if self._exhausted:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, TokenwireError):
            self._exhausted = True
            raise item
        if item is self._cursor.terminal:
            self._exhausted = True
        return item

    async def final(self) -> Done:
        """Read the rest of the turn and return its ``done`` event; raise
        :class:`TurnError` for an ``error`` one."""
        async for _ in self:
            pass
        terminal = self._cursor.terminal
        if terminal is None:
            raise RuntimeError("the turn was closed before its terminal event")
        if isinstance(terminal, Error):
            raise TurnError(terminal)
        return terminal

    async def cancel(self) -> None:
        """Stop the turn (a ``cancel`` message); keep reading to get its ``done`` (reason
        ``cancelled``). Nothing to do once it has ended."""
        if not self._ended:
            self._cancel_requested = True
            await self._session._send({"type": "cancel", "request_id": self.request_id})

    async def aclose(self) -> None:
        """Stop reading this turn; before its terminal event, cancel it if this session
        started it (unless ``cancel_on_close=False``)."""
        if self._ended:
            self._exhausted = True
            return
        self._ended = self._exhausted = True
        self._session._forget(self)
        if self._cancel_on_close:
            with contextlib.suppress(TokenwireError):
                await self._session._send({"type": "cancel", "request_id": self.request_id})

    async def __aenter__(self) -> WebSocketTurn:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _deliver(self, data: dict[str, Any]) -> None:
        try:
            event = self._cursor.feed_json(data)
        except ServerProtocolError as exc:
            self._fail(exc)
            return
        if event is None or self._ended:
            return
        self._resuming = False
        self._queue.put_nowait(event)
        if self._cursor.finished:
            self._ended = True
            self._session._forget(self)

    def _reject(self, error: APIError) -> None:
        self._fail(
            self._lost(error, "the server refused to resume it") if self._resuming else error
        )

    def _lost(self, cause: TokenwireError, why: str) -> ResumeError:
        error = ResumeError(
            f"the socket of stream {self.stream_id} dropped after event {self.last_event_id} "
            f"and {why}: {cause}",
            stream_id=self.stream_id,
            last_event_id=self.last_event_id,
        )
        error.__cause__ = cause
        return error

    def _fail(self, error: TokenwireError) -> None:
        if self._ended:
            return
        self._ended = True
        self._session._forget(self)
        self._queue.put_nowait(error)


def _frame(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()
