"""The Python client of a tokenwire server: typed events, resumed streams, many turns on one
socket. It needs ``httpx`` (and ``websockets`` for :meth:`AsyncTokenwire.websocket`), never the
server's dependencies::

    from tokenwire.client import AsyncTokenwire

    async with AsyncTokenwire("http://127.0.0.1:8000") as tw:     # api_key= or $TOKENWIRE_API_KEY
        async with tw.stream("Why is the sky blue?") as stream:
            async for event in stream:                           # tokenwire.protocol events
                if event.type == "text.delta":
                    print(event.delta, end="")
        done = await tw.complete("Hi")                           # the `done` event

:class:`Tokenwire` is the same without ``await``. A dropped connection is resumed from the last
event delivered (each event arrives once, in order) or raises :class:`ResumeError`; a turn that
ends with ``error`` is :class:`TurnError` from ``complete()``; a refused request is
:class:`APIStatusError` (``status``, ``code``, ``message``, ``retry_after``). Every error is a
:class:`TokenwireError`.
"""

from .async_client import AsyncEventStream, AsyncTokenwire
from .cursor import StreamCursor
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    ResumeError,
    ServerProtocolError,
    TokenwireError,
    TurnError,
)
from .options import DEFAULT_TIMEOUT, TurnParams
from .resume import ResumePolicy
from .sync_client import EventStream, Tokenwire
from .websocket import AsyncWebSocketSession, WebSocketTurn

__all__ = [
    "DEFAULT_TIMEOUT",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncEventStream",
    "AsyncTokenwire",
    "AsyncWebSocketSession",
    "EventStream",
    "ResumeError",
    "ResumePolicy",
    "ServerProtocolError",
    "StreamCursor",
    "Tokenwire",
    "TokenwireError",
    "TurnError",
    "TurnParams",
    "WebSocketTurn",
]
