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
    """The body as a JSON object. Raises :class:`ApiError` 400/413/415.

    The Content-Type must be ``application/json`` (or a ``+json`` type): a browser sends any
    other body (``text/plain``, a form, a Blob with no type) from any page without asking the
    server first, so only a JSON body is proof that a CORS preflight let the page send it.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"the body is over {limit} bytes")
    if not is_json_media_type(request.headers.get("content-type", "")):
        raise ApiError(
            415,
            "unsupported_media_type",
            "the body must be sent with Content-Type: application/json",
        )
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


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/*+json``, with any parameters (``charset``)."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
