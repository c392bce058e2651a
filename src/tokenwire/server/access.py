"""Who a request acts for, at the HTTP and WebSocket edges (see :mod:`tokenwire.auth`).

Every endpoint but ``/healthz`` and ``/metrics`` resolves a :class:`~tokenwire.auth.Principal`
first; the engine and the store then show each tenant only its own streams and conversations,
answering anything else exactly as if it did not exist (404, never 403: a 403 would confirm
that a guessed id is real).
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from ..auth import Authenticator, Principal

STREAM_TOKEN_HEADER = "Tokenwire-Stream-Token"
"""The response header carrying a stream's browser token (``?token=`` for EventSource)."""

WS_SUBPROTOCOL = "tokenwire.v1"
"""The WebSocket subprotocol the server selects when a client offers it."""

WS_BEARER_PREFIX = "tokenwire.bearer."
"""A browser cannot set headers on a WebSocket handshake, only its subprotocols: it offers
``tokenwire.v1`` and ``tokenwire.bearer.<key>`` (API keys are URL-safe, so valid protocol
tokens). The server reads the key from there and selects ``tokenwire.v1``, never echoing the
key back."""


def principal(
    auth: Authenticator, connection: HTTPConnection, stream_id: str | None = None
) -> Principal:
    """The principal of a request or socket; raises :class:`~tokenwire.auth.Unauthenticated`.
    ``stream_id``: the one stream the request opens, for which a ``?token=`` is accepted."""
    return auth.authenticate(connection.headers, connection.query_params, stream_id)


def websocket_principal(auth: Authenticator, ws: WebSocket) -> Principal:
    """The principal of a socket: its ``Authorization`` / ``X-API-Key`` header, or the key a
    browser offered as the subprotocol ``tokenwire.bearer.<key>``."""
    key = next(
        (p.removeprefix(WS_BEARER_PREFIX) for p in _offered(ws) if p.startswith(WS_BEARER_PREFIX)),
        None,
    )
    if key is None:
        return principal(auth, ws)
    headers = {k.lower(): v for k, v in ws.headers.items() if k.lower() != "sec-websocket-protocol"}
    if "authorization" not in headers:
        headers["authorization"] = f"Bearer {key}"
    elif headers["authorization"] != f"Bearer {key}":
        # Two different credentials: refuse rather than pick one.
        headers["x-api-key"] = key
    return auth.authenticate(headers, ws.query_params)


def websocket_subprotocol(ws: WebSocket) -> str | None:
    """The subprotocol to select: ``tokenwire.v1`` when offered (a browser fails a handshake
    that offered protocols and got none back), else none."""
    return WS_SUBPROTOCOL if WS_SUBPROTOCOL in _offered(ws) else None


def _offered(ws: WebSocket) -> list[str]:
    header = ws.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]
