"""HTTP error mapping: one table from failure to status and code, one JSON shape for all.

Every error a client can cause gets ``{"error": {"code": ..., "message": ...}}`` and a 4xx;
anything else is a 500 with the same shape and no traceback (the traceback goes to the log).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..auth import Unauthenticated
from ..bus import ResumeUnavailable, UnknownStream
from ..engine import Overloaded, RequestError

logger = logging.getLogger("tokenwire.server")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "overloaded",
}


class ApiError(Exception):
    """An error the server answers with directly (bad body, unknown stream, ...)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def to_api_error(exc: BaseException) -> ApiError:
    """The table: every known failure → (status, code)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Overloaded):
        return ApiError(
            503, exc.code, exc.message, {"Retry-After": str(max(1, round(exc.retry_after_s)))}
        )
    if isinstance(exc, RequestError):
        return ApiError(exc.status, exc.code, exc.message)
    if isinstance(exc, Unauthenticated):
        return ApiError(401, exc.code, exc.message, exc.headers)
    if isinstance(exc, UnknownStream):
        return ApiError(404, "unknown_stream", f"no stream {exc.args[0]!r} is held")
    if isinstance(exc, ResumeUnavailable):
        return ApiError(410, "resume_unavailable", str(exc))
    return ApiError(500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> Response:
        err = to_api_error(exc)
        return error_response(err.status, err.code, err.message, err.headers)

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail: Any = exc.detail
        return error_response(exc.status_code, code, str(detail), dict(exc.headers or {}))

    async def validation_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors()[:10]:
            where = ".".join(str(p) for p in err.get("loc", ())) or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(parts))

    async def unexpected(_request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal error")

    for exc_type in (ApiError, RequestError, UnknownStream, ResumeUnavailable, Unauthenticated):
        app.add_exception_handler(exc_type, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
