"""Everything the client raises, as one tree, named by whose fault it is::

    TokenwireError               base: ``except TokenwireError`` catches all of the client's errors
    ├── APIError                 the server refused a request: ``code``, ``message``
    │   └── APIStatusError       ... with an HTTP error status: ``status``, ``retry_after``
    ├── APIConnectionError       the server could not be reached, or a connection failed
    │   └── APITimeoutError      ... because a timeout expired
    ├── ResumeError              a stream's connection dropped and the stream could not be resumed
    ├── TurnError                the turn ended with an ``error`` event (``event`` holds it)
    └── ServerProtocolError      the server sent something protocol v1 does not allow

Foreign errors (httpx's, websockets') are translated where they happen and chained as
``__cause__``; they never reach the caller bare.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import orjson

from ..protocol import Error
from ..protocol.retry import retry_after_seconds


class TokenwireError(Exception):
    """Base of every error the client raises."""


class APIError(TokenwireError):
    """The server refused a request. Over the WebSocket this is the ``error`` frame answering
    one ``request_id`` (the socket keeps serving the others)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        """The machine-readable code, e.g. ``invalid_request``, ``unknown_stream``."""
        self.message = message


class APIStatusError(APIError):
    """The server answered an HTTP request with a 4xx or 5xx and its JSON error body
    ``{"error": {"code", "message"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(code, message)
        self.status = status
        self.retry_after = retry_after
        """Seconds the server asked to wait (``Retry-After``, sent with 503 ``overloaded``)."""
        self.headers: Mapping[str, str] = dict(headers or {})

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    @classmethod
    def from_response(
        cls, status: int, headers: Mapping[str, str], content: bytes
    ) -> APIStatusError:
        """Read a server error response; a body that is not tokenwire's JSON (a proxy's HTML
        page, say) still gives an error with a code (``http_<status>``) and the text."""
        code, message = f"http_{status}", content.decode("utf-8", "replace")[:500]
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or code)
            message = str(error.get("message") or "")
        lowered = {k.lower(): v for k, v in headers.items()}
        return cls(
            status,
            code,
            message,
            retry_after=retry_after_seconds(lowered.get("retry-after")),
            headers=lowered,
        )


class APIConnectionError(TokenwireError):
    """The server could not be reached, or a connection to it failed (no answer to blame)."""


class APITimeoutError(APIConnectionError):
    """A connect, read, write or pool timeout expired."""


class ResumeError(TokenwireError):
    """A stream's connection dropped and it could not be resumed: the server no longer holds
    the events after ``last_event_id`` (410 ``resume_unavailable``), no longer knows the stream
    (404), or every reconnection failed. ``__cause__`` is the last failure."""

    def __init__(self, message: str, *, stream_id: str | None, last_event_id: int) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.last_event_id = last_event_id
        """The ``seq`` of the last event delivered: everything up to it was seen, once."""


class TurnError(TokenwireError):
    """The turn ended with an ``error`` event: it failed before anything visible was
    delivered. ``code`` says why (``upstream_rate_limited``, ``timeout_first_token``, ...);
    ``retryable`` whether sending the same request later may succeed, and ``retry_after`` how
    many seconds to wait first when the upstream said."""

    def __init__(self, event: Error) -> None:
        super().__init__(f"{event.code}: {event.message}")
        self.event = event
        self.code = event.code
        self.message = event.message
        self.retryable = event.retryable
        self.retry_after: float | None = event.retry_after_s
        self.stream_id = event.stream_id


class ServerProtocolError(TokenwireError):
    """The server broke protocol v1 (malformed SSE or JSON, a gap in ``seq``, an event after
    the terminal one): a bug on the far side, never retried."""


TRANSIENT_HTTP_ERRORS: tuple[type[Exception], ...] = (
    httpx.NetworkError,
    httpx.TimeoutException,
    httpx.RemoteProtocolError,
)
"""Failures a reconnection may cure: the network, a timeout, a connection cut mid-response.
Other transport errors (an unsupported URL scheme, a local misuse) are raised at once."""


def connection_error(exc: Exception) -> APIConnectionError:
    """Translate an httpx transport error (chained as the result's ``__cause__``)."""
    error: APIConnectionError
    if isinstance(exc, httpx.TimeoutException):
        error = APITimeoutError(f"timed out ({type(exc).__name__}: {exc})")
    else:
        error = APIConnectionError(f"connection failed ({type(exc).__name__}: {exc})")
    error.__cause__ = exc
    return error
