"""Who a request acts for, at the HTTP and WebSocket edges (see :mod:`tokenwire.auth`).

Every endpoint but ``/healthz`` and ``/metrics`` resolves a :class:`~tokenwire.auth.Principal`
first; the engine and the store then show each tenant only its own streams and conversations,
answering anything else exactly as if it did not exist (404, never 403: a 403 would confirm
that a guessed id is real).
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from ..auth import Authenticator, Principal

STREAM_TOKEN_HEADER = "Tokenwire-Stream-Token"
"""The response header carrying a stream's browser token (``?token=`` for EventSource)."""


def principal(
    auth: Authenticator, connection: HTTPConnection, stream_id: str | None = None
) -> Principal:
    """The principal of a request or socket; raises :class:`~tokenwire.auth.Unauthenticated`.
    ``stream_id``: the one stream the request opens, for which a ``?token=`` is accepted."""
    return auth.authenticate(connection.headers, connection.query_params, stream_id)
