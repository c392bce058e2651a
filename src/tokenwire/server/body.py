"""Reading a JSON request body without trusting its size.

A declared ``Content-Length`` over the limit is refused before a byte is read; a chunked body is
counted as it arrives and refused the moment it passes the limit, so an oversize upload never
sits in memory.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from .errors import ApiError


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object. Raises :class:`ApiError` 400/413.

    The Content-Type is not enforced: the body is parsed as JSON whatever it says (``curl -d``
    labels JSON as a form), and a body that is not JSON gets a 400 explaining so.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body is over {limit} bytes")
        chunks.append(chunk)
    if not size:
        raise ApiError(400, "invalid_json", "the body is empty; expected a JSON object")
    try:
        data = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return data
