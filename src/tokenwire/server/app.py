"""The ASGI application: SSE, WebSocket and REST endpoints over one :class:`Engine`.

Standalone: ``create_app(settings)`` returns a FastAPI app whose lifespan opens and closes the
engine. Embedded in an existing FastAPI app: ``app.include_router(create_router(engine))`` and
enter ``engine_lifespan(engine)`` from the host app's own lifespan (Starlette does not run the
lifespan of a mounted sub-app, so the host must own it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request, WebSocket
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .. import __version__
from ..auth import Authenticator, Unauthenticated
from ..config import Settings
from ..engine import Engine, RequestError, TurnHandle
from ..protocol.ws import encode_request_error
from .access import (
    STREAM_TOKEN_HEADER,
    principal,
    websocket_principal,
    websocket_subprotocol,
)
from .aisdk import aisdk_routes
from .body import read_json_object
from .conversations import conversation_routes
from .errors import ApiError, error_response, install_error_handlers, to_api_error
from .openai_compat import openai_routes
from .origins import OriginGuard, OriginPolicy
from .pacing import remember_connection
from .sse import EventStreamResponse
from .ui import ui_routes
from .ws import CLOSE_POLICY_VIOLATION, serve_websocket

logger = logging.getLogger("tokenwire.server")


def create_router(engine: Engine, auth: Authenticator | None = None) -> APIRouter:
    """tokenwire's endpoints, ready for ``app.include_router``. ``auth``: built from
    ``engine.settings.auth`` when not given."""
    router = APIRouter()
    auth = auth if auth is not None else Authenticator(engine.settings.auth)

    @router.post("/v1/streams", response_model=None)
    async def start_stream(request: Request) -> Any:
        return await stream_response(engine, auth, request)

    @router.get("/v1/streams")
    async def list_streams(
        request: Request,
        state: str = Query(default="active", pattern="^active$"),
    ) -> dict[str, Any]:
        tenant = principal(auth, request).tenant
        active = await engine.list_active(tenant=tenant)
        return {"streams": [asdict(turn) for turn in active]}

    @router.get("/v1/streams/{stream_id}/events", response_model=None)
    async def stream_events(stream_id: str, request: Request) -> Any:
        return await resume_response(engine, auth, stream_id, request)

    @router.get("/v1/streams/{stream_id}")
    async def stream_status(stream_id: str, request: Request) -> dict[str, Any]:
        tenant = principal(auth, request, stream_id).tenant
        return await engine.status(stream_id, tenant=tenant)

    @router.post("/v1/streams/{stream_id}/cancel")
    async def cancel_stream(stream_id: str, request: Request) -> dict[str, Any]:
        tenant = principal(auth, request).tenant
        cancelled = await engine.stop(stream_id, tenant=tenant)
        return {"stream_id": stream_id, "cancelled": cancelled}

    @router.websocket("/v1/ws")
    async def websocket(ws: WebSocket) -> None:
        subprotocol = websocket_subprotocol(ws)
        try:
            tenant = websocket_principal(auth, ws).tenant
        except Unauthenticated as exc:
            await _refuse_websocket(ws, exc, subprotocol)
            return
        await serve_websocket(ws, engine, tenant=tenant, subprotocol=subprotocol)

    router.include_router(conversation_routes(engine, auth))
    router.include_router(openai_routes(engine, auth))
    router.include_router(aisdk_routes(engine, auth))
    router.include_router(ui_routes())

    @router.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "active_streams": len(engine.active())}

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(
            engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return router


async def stream_response(engine: Engine, auth: Authenticator, request: Request) -> Response:
    """``POST /v1/streams``: validate the body, start the turn (or join the one its
    ``Idempotency-Key`` started), answer with its SSE stream — or 202 for a background turn.
    With auth on, the response carries the stream's browser token (header
    ``Tokenwire-Stream-Token``; ``stream_token`` in a 202 body)."""
    who = principal(auth, request)
    settings = engine.settings
    body = await read_json_object(request, settings.limits.max_body_bytes)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 200:
        raise ApiError(400, "bad_request", "Idempotency-Key must be 1..200 characters")
    # A retry by key says what it already holds of the key's stream (fetch-event-source sends
    # Last-Event-ID on every retry): it resumes after that, or gets a fresh turn (see
    # engine.idempotency). Without a key there is no stream it could refer to.
    seen = _cursor(request) if key is not None else 0
    handle = await engine.submit(body, idempotency_key=key, tenant=who.tenant, seen_seq=seen)
    after = seen if handle.joined else 0
    if after > handle.head:
        raise ApiError(400, "bad_request", f"cursor {after} is ahead of the stream")
    token = auth.issue_token(who, handle.stream_id)
    headers = {STREAM_TOKEN_HEADER: token} if token is not None else {}
    if handle.background:
        base = str(request.base_url).rstrip("/") + request.scope.get("root_path", "")
        answer: dict[str, Any] = {
            "stream_id": handle.stream_id,
            "events_url": f"{base}/v1/streams/{handle.stream_id}/events",
            "status_url": f"{base}/v1/streams/{handle.stream_id}",
            "joined": handle.joined,
        }
        if token is not None:
            answer["stream_token"] = token
        return JSONResponse(
            answer,
            status_code=202,
            headers={"Location": f"/v1/streams/{handle.stream_id}", **headers},
        )
    return _sse(engine, handle, after_seq=after, originator=handle.originator, headers=headers)


async def resume_response(
    engine: Engine, auth: Authenticator, stream_id: str, request: Request
) -> Response:
    """``GET /v1/streams/{id}/events``: replay after ``Last-Event-ID`` (or ``?after=``) and
    follow live, as a viewer: leaving never stops the turn."""
    tenant = principal(auth, request, stream_id).tenant
    after = _cursor(request)
    handle = await engine.lookup(stream_id, tenant=tenant)
    if after > handle.head:
        # No client can have seen an event that does not exist yet: a corrupted cursor.
        raise ApiError(400, "bad_request", f"cursor {after} is ahead of the stream")
    return _sse(engine, handle, after_seq=after, originator=False)


def _cursor(request: Request) -> int:
    """The client's ``Last-Event-ID`` (or ``?after=``): the last seq it holds (0: none)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "bad_request", "Last-Event-ID / after must be a non-negative integer")
    return int(raw)


async def _refuse_websocket(ws: WebSocket, exc: Unauthenticated, subprotocol: str | None) -> None:
    """Accept, answer with an ``error`` frame (code ``unauthorized``), close with 1008. A
    refused handshake would tell a browser nothing (its WebSocket API hides the status); a
    frame it can read, and the close code, say exactly what went wrong."""
    await ws.accept(subprotocol=subprotocol)
    await ws.send_text(encode_request_error(None, exc.code, exc.message).decode())
    await ws.close(code=CLOSE_POLICY_VIOLATION, reason="unauthorized")


def _sse(
    engine: Engine,
    handle: TurnHandle,
    *,
    after_seq: int,
    originator: bool,
    headers: dict[str, str] | None = None,
) -> EventStreamResponse:
    settings = engine.settings
    return EventStreamResponse(
        handle,
        metrics=engine.metrics,
        heartbeat_s=settings.server.heartbeat_s,
        send_timeout_s=settings.limits.slow_client_send_timeout_s,
        max_lag_events=settings.limits.slow_client_lag_events,
        after_seq=after_seq,
        originator=originator,
        extra_headers=headers,
    )


class TokenwireApp(FastAPI):
    """The standalone app. ``POST /v1/streams`` (the hot path) is answered before FastAPI's
    middleware stack: every SSE write would otherwise pass through four ``send`` wrappers.
    Its errors get the same JSON bodies as every other endpoint. Outside of both, the
    :class:`~.origins.OriginGuard` checks ``Host`` and ``Origin`` and answers CORS."""

    engine: Engine
    auth: Authenticator
    origin_guard: OriginGuard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            # Here send is still the server's own: how to reset a dropped reader's connection.
            remember_connection(scope, send)
        await self.origin_guard(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/v1/streams"
            and (scope["method"] == "POST")
        ):
            await self._start_stream(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _start_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response: Response = await stream_response(
                self.engine, self.auth, Request(scope, receive)
            )
        except Exception as exc:
            err = to_api_error(exc)
            if err.status >= 500 and not isinstance(exc, RequestError):
                # A refusal (503 overloaded) is an answer, not a failure to log.
                logger.exception("POST /v1/streams failed", exc_info=exc)
            response = error_response(err.status, err.code, err.message, err.headers)
        await response(scope, receive, send)


@contextlib.asynccontextmanager
async def engine_lifespan(engine: Engine) -> AsyncIterator[None]:
    """Open the engine for the app's lifetime; on shutdown stop its turns (reason
    ``shutdown``) so every stream gets its terminal event."""
    await engine.open()
    try:
        yield
    finally:
        await engine.aclose()


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> TokenwireApp:
    """A standalone tokenwire ASGI app (FastAPI)."""
    engine = engine if engine is not None else Engine(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with engine_lifespan(engine):
            yield

    app = TokenwireApp(
        title="tokenwire",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.engine = engine
    app.auth = Authenticator(engine.settings.auth)
    policy = OriginPolicy.from_settings(engine.settings.server, auth_enabled=app.auth.enabled)
    app.origin_guard = OriginGuard(app._route, policy)
    app.state.engine = engine
    install_error_handlers(app)
    app.include_router(create_router(engine, app.auth))
    return app
