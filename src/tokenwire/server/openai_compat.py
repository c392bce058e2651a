"""The OpenAI-compatible endpoints: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Point any OpenAI SDK or tool at ``<tokenwire>/v1`` and its requests become tokenwire turns, with
their guarantees: deadlines, fallback, cancel-on-disconnect, usage, and endings that tell the
truth. ``model`` names a tokenwire route (``GET /v1/models`` lists them); every response names
the route as its ``model`` (the upstream model that answered is in the ``tokenwire`` extension).

- Translation is pure: :mod:`.openai_request` (which request fields are honoured, ignored or
  refused) and :mod:`.openai_translator` (events → chunks; which status a failed turn gets);
  the streaming and the waiting are :mod:`.openai_response`.
- Every error of these endpoints, 401 included, has OpenAI's shape
  ``{"error": {"message", "type", "param", "code"}}``, which the SDKs parse. A body tokenwire
  refuses is a 400 (OpenAI's status for every invalid request; tokenwire's own endpoints say
  422), an unknown model a 404 ``model_not_found``, too many turns a 503 with ``Retry-After``.
- The key is sent as ``Authorization: Bearer`` (the SDK's ``api_key``); the turn belongs to
  its tenant. Responses carry ``X-Tokenwire-Stream-Id`` (and, with auth on, the stream's
  browser token), so a tokenwire-aware client can follow, cancel or look the turn up natively.
  An ``Idempotency-Key`` header joins the turn that key started, as on ``POST /v1/streams``.
"""

from __future__ import annotations

import logging
import time

import orjson
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from ..auth import Authenticator, Unauthenticated
from ..engine import Engine
from .access import STREAM_TOKEN_HEADER, principal
from .body import read_json_object
from .errors import ApiError, to_api_error
from .openai_request import OpenAIRequestError, parse_chat_request
from .openai_response import ChatCompletionResponse
from .openai_translator import error_object, error_type, model_list, model_object

logger = logging.getLogger("tokenwire.openai")

_CODES = {
    "unknown_route": "model_not_found",
    "context_too_long": "context_length_exceeded",
}
"""tokenwire's error codes that OpenAI has its own name for."""


def openai_routes(engine: Engine, auth: Authenticator) -> APIRouter:
    """The OpenAI-compatible endpoints, ready for ``include_router``."""
    router = APIRouter()
    created = int(time.time())
    """Every model's ``created``: when this server started serving its routes."""

    @router.get("/v1/models", response_model=None)
    async def list_models(request: Request) -> Response:
        try:
            principal(auth, request)
        except Exception as exc:
            return openai_error_response(exc)
        return JSONResponse(model_list(engine.settings.routes, created=created))

    @router.get("/v1/models/{model_id:path}", response_model=None)
    async def get_model(model_id: str, request: Request) -> Response:
        try:
            principal(auth, request)
            if model_id not in engine.settings.routes:
                raise OpenAIRequestError(
                    f"The model `{model_id}` does not exist",
                    param="model",
                    code="model_not_found",
                    status=404,
                )
        except Exception as exc:
            return openai_error_response(exc)
        return JSONResponse(model_object(model_id, created=created))

    @router.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        try:
            return await _start(engine, auth, request)
        except Exception as exc:
            return openai_error_response(exc)

    return router


async def _start(engine: Engine, auth: Authenticator, request: Request) -> Response:
    who = principal(auth, request)
    settings = engine.settings
    body = await read_json_object(request, settings.limits.max_body_bytes)
    chat = parse_chat_request(body, settings.routes)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 200:
        raise ApiError(400, "bad_request", "Idempotency-Key must be 1..200 characters")
    handle = await engine.submit(chat.turn, idempotency_key=key, tenant=who.tenant)
    token = auth.issue_token(who, handle.stream_id)
    return ChatCompletionResponse(
        handle,
        chat,
        metrics=engine.metrics,
        hold_s=settings.server.heartbeat_s,
        heartbeat_s=settings.server.heartbeat_s,
        send_timeout_s=settings.limits.slow_client_send_timeout_s,
        max_lag_events=settings.limits.slow_client_lag_events,
        originator=handle.originator,
        extra_headers={STREAM_TOKEN_HEADER: token} if token is not None else None,
    )


def openai_error_response(exc: Exception) -> Response:
    """Any failure of these endpoints as OpenAI's error object, with the status of tokenwire's
    table (:func:`~.errors.to_api_error`) — except that an invalid request is a 400, as at
    OpenAI, where tokenwire's own endpoints say 422."""
    param: str | None = None
    headers: dict[str, str] = {}
    if isinstance(exc, OpenAIRequestError):
        status, code, message, param = exc.status, exc.code, exc.message, exc.param
    else:
        err = to_api_error(exc)
        if err.status >= 500:
            logger.error("OpenAI-compatible request failed", exc_info=exc)
        status = 400 if err.status == 422 else err.status
        code, message, headers = _CODES.get(err.code, err.code), err.message, err.headers
        if isinstance(exc, Unauthenticated):
            code = "invalid_api_key" if exc.invalid else "missing_api_key"
    body = error_object(message, kind=error_type(status), code=code, param=param)
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )
