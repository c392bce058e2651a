"""The asyncio client: :class:`AsyncTokenwire` and its streams, :class:`AsyncEventStream`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Unpack
from urllib.parse import quote

import httpx
from httpx import USE_CLIENT_DEFAULT

from ..protocol import Done, Error, Event
from .errors import (
    TRANSIENT_HTTP_ERRORS,
    APIConnectionError,
    APIStatusError,
    TokenwireError,
    TurnError,
    connection_error,
)
from .options import (
    CANCEL_ON_CLOSE_TIMEOUT,
    DEFAULT_TIMEOUT,
    ClientOptions,
    TurnParams,
    turn_body,
)
from .resume import ResumePolicy, StreamPlan
from .websocket import AsyncWebSocketSession


class AsyncTokenwire:
    """A tokenwire server, over HTTP (and WebSocket: :meth:`websocket`).

    ::

        async with AsyncTokenwire("http://127.0.0.1:8000") as tw:
            async with tw.stream("Why is the sky blue?") as stream:
                async for event in stream:
                    ...
            done = await tw.complete("Hi")

    ``base_url`` defaults to ``$TOKENWIRE_BASE_URL``, then ``http://127.0.0.1:8000`` (a
    path is kept: a server mounted under ``/llm``); ``api_key`` (sent as ``Authorization:
    Bearer``) to ``$TOKENWIRE_API_KEY``. ``timeout`` applies to every request; its ``read``
    part is the silence allowed on a stream, which the server's heartbeats break every 15 s,
    so a connection that died silently is resumed too. ``resume``: how a dropped stream is
    resumed (:class:`ResumePolicy`). ``http_client``: an ``httpx.AsyncClient`` of your own
    (proxies, transports, limits, its own timeouts instead of ``timeout``); it is not closed
    with this client.

    Every failure of the server or the network is a :class:`TokenwireError` (the tree is in
    :mod:`tokenwire.client.errors`).
    """

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        resume: ResumePolicy | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._options = ClientOptions.build(base_url, api_key, headers)
        self._resume = resume if resume is not None else ResumePolicy()
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=timeout)

    @property
    def base_url(self) -> str:
        return self._options.base_url

    def stream(
        self,
        prompt: str | None = None,
        *,
        idempotency_key: str | None = None,
        cancel_on_close: bool = True,
        extra_headers: Mapping[str, str] | None = None,
        **params: Unpack[TurnParams],
    ) -> AsyncEventStream:
        """Start a turn and stream its events (``POST /v1/streams``): iterate the result, best
        inside ``async with`` so the connection is released when you leave.

        A dropped connection is resumed from the last event delivered (``GET
        /v1/streams/{id}/events`` with ``Last-Event-ID``): every event arrives once, in order,
        or :class:`ResumeError` says why it cannot. For that the request says
        ``"on_disconnect": "continue"`` unless you pass ``on_disconnect="cancel"``.

        Closing the stream before its terminal event cancels the turn
        (``cancel_on_close=False``: leave it running, to read later with :meth:`events`). A
        ``background=True`` turn is never cancelled by closing its stream. The request is
        sent when iteration starts.
        """
        body = turn_body(prompt, params)
        plan = StreamPlan.turn(
            self._options,
            self._resume,
            body,
            idempotency_key=idempotency_key,
            headers=extra_headers,
        )
        return AsyncEventStream(self, plan, cancel_on_close=cancel_on_close)

    def events(
        self,
        stream_id: str,
        *,
        after: int = 0,
        extra_headers: Mapping[str, str] | None = None,
    ) -> AsyncEventStream:
        """Follow an existing stream (running or recently finished) from after event ``after``,
        as a viewer: leaving never stops its turn. Resumes after drops like :meth:`stream`.
        A stream the server does not hold is :class:`APIStatusError` 404; a cursor it no longer
        holds, 410 ``resume_unavailable``."""
        plan = StreamPlan.follow(
            self._options, self._resume, stream_id, after_seq=after, headers=extra_headers
        )
        return AsyncEventStream(self, plan, cancel_on_close=False)

    async def complete(
        self,
        prompt: str | None = None,
        *,
        idempotency_key: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Unpack[TurnParams],
    ) -> Done:
        """Run a turn to its end and return its ``done`` event (``answer`` is the canonical
        text). A turn that ends with ``error`` raises :class:`TurnError` carrying the event."""
        async with self.stream(
            prompt, idempotency_key=idempotency_key, extra_headers=extra_headers, **params
        ) as stream:
            return await stream.final()

    async def cancel(self, stream_id: str) -> bool:
        """Stop a turn (``POST /v1/streams/{id}/cancel``); its readers get ``done`` with reason
        ``cancelled``. False when it had already ended."""
        return await self._cancel(stream_id)

    async def _cancel(self, stream_id: str, request_timeout: httpx.Timeout | None = None) -> bool:
        path = f"/v1/streams/{quote(stream_id, safe='')}/cancel"
        answer = await self._request_json("POST", path, request_timeout=request_timeout)
        return bool(answer.get("cancelled"))

    async def status(self, stream_id: str) -> dict[str, Any]:
        """A stream's state (``GET /v1/streams/{id}``): ``state``, progress, and its terminal
        event once finished."""
        return await self._request_json("GET", f"/v1/streams/{quote(stream_id, safe='')}")

    def websocket(
        self, *, max_message_bytes: int = 16 * 1024 * 1024, open_timeout: float = 10.0
    ) -> AsyncWebSocketSession:
        """A WebSocket session (``/v1/ws``) running many turns at once on one socket; use it
        as ``async with tw.websocket() as ws``. Needs the ``websockets`` package."""
        return AsyncWebSocketSession(
            self._options,
            self._resume,
            max_message_bytes=max_message_bytes,
            open_timeout=open_timeout,
        )

    async def aclose(self) -> None:
        """Close the connections (not those of an ``http_client`` you passed)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncTokenwire:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _request_json(
        self, method: str, path: str, *, request_timeout: httpx.Timeout | None = None
    ) -> dict[str, Any]:
        headers = self._options.request_headers({"Accept": "application/json"})
        try:
            response = await self._http.request(
                method,
                self._options.url(path),
                headers=headers,
                timeout=request_timeout if request_timeout is not None else USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        if response.status_code >= 400:
            raise APIStatusError.from_response(
                response.status_code, response.headers, response.content
            )
        answer: dict[str, Any] = response.json()
        return answer


class AsyncEventStream:
    """The events of one stream, resumed across dropped connections: an async iterator of
    :mod:`tokenwire.protocol` events that ends after the terminal one (``Done`` or ``Error``;
    an ``error`` terminal is yielded like any event: :meth:`final` raises it).

    Iterating again continues where the last loop stopped. Not for several tasks at once.
    """

    def __init__(self, client: AsyncTokenwire, plan: StreamPlan, *, cancel_on_close: bool) -> None:
        self._client = client
        self._plan = plan
        self._cancel_on_close = cancel_on_close and plan.owner
        self._iterator: AsyncGenerator[Event, None] | None = None
        self._response: httpx.Response | None = None
        self._released = False

    @property
    def stream_id(self) -> str | None:
        """The stream's id, known once the server answered (before the first event)."""
        return self._plan.stream_id

    @property
    def last_event_id(self) -> int:
        """The ``seq`` of the last event delivered (0 before the first)."""
        return self._plan.cursor.last_seq

    @property
    def terminal(self) -> Done | Error | None:
        """The terminal event, once delivered."""
        return self._plan.cursor.terminal

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._iterator is None:
            self._iterator = self._iterate()
        return self._iterator

    async def __anext__(self) -> Event:
        return await self.__aiter__().__anext__()

    async def final(self) -> Done:
        """Read the rest of the stream and return its ``done`` event; raise
        :class:`TurnError` for an ``error`` one."""
        async for _ in self:
            pass
        terminal = self._plan.cursor.terminal
        if terminal is None:
            raise RuntimeError("the stream was closed before its terminal event")
        if isinstance(terminal, Error):
            raise TurnError(terminal)
        return terminal

    async def cancel(self) -> bool:
        """Stop the turn; keep reading to get its ``done`` (reason ``cancelled``)."""
        if self.stream_id is None:
            raise RuntimeError("the turn has not started yet: read its first event first")
        return await self._client.cancel(self.stream_id)

    async def aclose(self) -> None:
        """Release the connection; before the terminal event, also cancel the turn this
        stream started (unless ``cancel_on_close=False``). Idempotent."""
        if self._iterator is not None:
            await self._iterator.aclose()
        await self._release()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _iterate(self) -> AsyncGenerator[Event, None]:
        plan = self._plan
        http = self._client._http
        try:
            while not plan.cursor.finished and not self._released:
                request = plan.next_request()
                try:
                    response = await http.send(
                        http.build_request(
                            request.method, request.url, headers=request.headers, json=request.json
                        ),
                        stream=True,
                    )
                    self._response = response
                    try:
                        if plan.on_headers(response.status_code, response.headers):
                            async for chunk in response.aiter_bytes():
                                for event in plan.feed(chunk):
                                    yield event
                                if plan.cursor.finished:
                                    return
                            delay = plan.on_drop(
                                APIConnectionError("the stream ended before its terminal event")
                            )
                        else:
                            content = await response.aread()
                            delay = plan.on_body(response.status_code, response.headers, content)
                    finally:
                        self._response = None
                        await response.aclose()
                except TRANSIENT_HTTP_ERRORS as exc:
                    delay = plan.on_drop(connection_error(exc))
                except httpx.TransportError as exc:
                    raise connection_error(exc) from exc
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            await self._release()

    async def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._response is not None:
            await self._response.aclose()
        stream_id = self._plan.stream_id
        if self._cancel_on_close and not self._plan.cursor.finished and stream_id is not None:
            with contextlib.suppress(TokenwireError):
                await self._client._cancel(stream_id, CANCEL_ON_CLOSE_TIMEOUT)
