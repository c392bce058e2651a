"""The blocking client: :class:`Tokenwire` and its streams, :class:`EventStream`. The same
API as :mod:`.async_client` without ``await``; the same :class:`StreamPlan` decides every
reconnection, so both resume alike. (No blocking WebSocket: running several turns at once on
one socket is what asyncio is for.)"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterator, Mapping
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


class Tokenwire:
    """A tokenwire server, over HTTP, blocking. See :class:`AsyncTokenwire` for every
    parameter; ``http_client`` is an ``httpx.Client`` here.

    ::

        with Tokenwire() as tw:
            with tw.stream("Why is the sky blue?") as stream:
                for event in stream:
                    ...
            done = tw.complete("Hi")
    """

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        resume: ResumePolicy | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._options = ClientOptions.build(base_url, api_key, headers)
        self._resume = resume if resume is not None else ResumePolicy()
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=timeout)

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
    ) -> EventStream:
        """Start a turn and stream its events; see :meth:`AsyncTokenwire.stream`."""
        body = turn_body(prompt, params)
        plan = StreamPlan.turn(
            self._options,
            self._resume,
            body,
            idempotency_key=idempotency_key,
            headers=extra_headers,
        )
        return EventStream(self, plan, cancel_on_close=cancel_on_close)

    def events(
        self,
        stream_id: str,
        *,
        after: int = 0,
        extra_headers: Mapping[str, str] | None = None,
    ) -> EventStream:
        """Follow an existing stream as a viewer; see :meth:`AsyncTokenwire.events`."""
        plan = StreamPlan.follow(
            self._options, self._resume, stream_id, after_seq=after, headers=extra_headers
        )
        return EventStream(self, plan, cancel_on_close=False)

    def complete(
        self,
        prompt: str | None = None,
        *,
        idempotency_key: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Unpack[TurnParams],
    ) -> Done:
        """Run a turn to its end and return its ``done`` event; :class:`TurnError` for an
        ``error`` one."""
        with self.stream(
            prompt, idempotency_key=idempotency_key, extra_headers=extra_headers, **params
        ) as stream:
            return stream.final()

    def cancel(self, stream_id: str) -> bool:
        """Stop a turn; False when it had already ended."""
        return self._cancel(stream_id)

    def _cancel(self, stream_id: str, request_timeout: httpx.Timeout | None = None) -> bool:
        path = f"/v1/streams/{quote(stream_id, safe='')}/cancel"
        answer = self._request_json("POST", path, request_timeout=request_timeout)
        return bool(answer.get("cancelled"))

    def status(self, stream_id: str) -> dict[str, Any]:
        """A stream's state (``GET /v1/streams/{id}``)."""
        return self._request_json("GET", f"/v1/streams/{quote(stream_id, safe='')}")

    def close(self) -> None:
        """Close the connections (not those of an ``http_client`` you passed)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Tokenwire:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request_json(
        self, method: str, path: str, *, request_timeout: httpx.Timeout | None = None
    ) -> dict[str, Any]:
        headers = self._options.request_headers({"Accept": "application/json"})
        try:
            response = self._http.request(
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


class EventStream:
    """The events of one stream, resumed across dropped connections; see
    :class:`AsyncEventStream`."""

    def __init__(self, client: Tokenwire, plan: StreamPlan, *, cancel_on_close: bool) -> None:
        self._client = client
        self._plan = plan
        self._cancel_on_close = cancel_on_close and plan.owner
        self._iterator: Generator[Event, None, None] | None = None
        self._response: httpx.Response | None = None
        self._released = False

    @property
    def stream_id(self) -> str | None:
        return self._plan.stream_id

    @property
    def last_event_id(self) -> int:
        return self._plan.cursor.last_seq

    @property
    def terminal(self) -> Done | Error | None:
        return self._plan.cursor.terminal

    def __iter__(self) -> Iterator[Event]:
        if self._iterator is None:
            self._iterator = self._iterate()
        return self._iterator

    def __next__(self) -> Event:
        return next(self.__iter__())

    def final(self) -> Done:
        """Read the rest of the stream and return its ``done`` event; raise
        :class:`TurnError` for an ``error`` one."""
        for _ in self:
            pass
        terminal = self._plan.cursor.terminal
        if terminal is None:
            raise RuntimeError("the stream was closed before its terminal event")
        if isinstance(terminal, Error):
            raise TurnError(terminal)
        return terminal

    def cancel(self) -> bool:
        """Stop the turn; keep reading to get its ``done`` (reason ``cancelled``)."""
        if self.stream_id is None:
            raise RuntimeError("the turn has not started yet: read its first event first")
        return self._client.cancel(self.stream_id)

    def close(self) -> None:
        """Release the connection; before the terminal event, also cancel the turn this
        stream started (unless ``cancel_on_close=False``). Idempotent."""
        if self._iterator is not None:
            self._iterator.close()
        self._release()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _iterate(self) -> Generator[Event, None, None]:
        plan = self._plan
        http = self._client._http
        try:
            while not plan.cursor.finished and not self._released:
                request = plan.next_request()
                try:
                    response = http.send(
                        http.build_request(
                            request.method, request.url, headers=request.headers, json=request.json
                        ),
                        stream=True,
                    )
                    self._response = response
                    try:
                        if plan.on_headers(response.status_code, response.headers):
                            for chunk in response.iter_bytes():
                                yield from plan.feed(chunk)
                                if plan.cursor.finished:
                                    return
                            delay = plan.on_drop(
                                APIConnectionError("the stream ended before its terminal event")
                            )
                        else:
                            content = response.read()
                            delay = plan.on_body(response.status_code, response.headers, content)
                    finally:
                        self._response = None
                        response.close()
                except TRANSIENT_HTTP_ERRORS as exc:
                    delay = plan.on_drop(connection_error(exc))
                except httpx.TransportError as exc:
                    raise connection_error(exc) from exc
                if delay > 0:
                    time.sleep(delay)
        finally:
            self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._response is not None:
            self._response.close()
        stream_id = self._plan.stream_id
        if self._cancel_on_close and not self._plan.cursor.finished and stream_id is not None:
            with contextlib.suppress(TokenwireError):
                self._client._cancel(stream_id, CANCEL_ON_CLOSE_TIMEOUT)
