"""The ASGI application: SSE, WebSocket and REST endpoints over one :class:`Engine`.

Standalone: ``create_app(settings)`` returns a FastAPI app whose lifespan opens and closes the
engine. Embedded in an existing FastAPI app: ``app.include_router(create_router(engine))`` and
enter ``engine_lifespan(engine)`` from the host app's own lifespan (Starlette does not run the
lifespan of a mounted sub-app, so the host must own it).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request, WebSocket
from starlette.responses import Response

from .. import __version__
from ..config import Settings
from ..engine import Engine
from .body import read_json_object
from .errors import install_error_handlers
from .sse import EventStreamResponse
from .ws import serve_websocket


def create_router(engine: Engine) -> APIRouter:
    """tokenwire's endpoints, ready for ``app.include_router``."""
    router = APIRouter()
    settings = engine.settings

    @router.post("/v1/streams", response_model=None)
    async def start_stream(request: Request) -> Any:
        body = await read_json_object(request, settings.limits.max_body_bytes)
        handle = engine.submit(body)
        return EventStreamResponse(
            handle,
            metrics=engine.metrics,
            heartbeat_s=settings.server.heartbeat_s,
            send_timeout_s=settings.limits.slow_client_send_timeout_s,
            max_lag_events=settings.limits.slow_client_lag_events,
        )

    @router.get("/v1/streams")
    async def list_streams(
        state: str = Query(default="active", pattern="^active$"),
    ) -> dict[str, Any]:
        return {"streams": [asdict(turn) for turn in engine.active()]}

    @router.get("/v1/streams/{stream_id}")
    async def stream_status(stream_id: str) -> dict[str, Any]:
        return engine.status(stream_id)

    @router.post("/v1/streams/{stream_id}/cancel")
    async def cancel_stream(stream_id: str) -> dict[str, Any]:
        cancelled = engine.cancel(stream_id)
        return {"stream_id": stream_id, "cancelled": cancelled}

    @router.websocket("/v1/ws")
    async def websocket(ws: WebSocket) -> None:
        await serve_websocket(ws, engine)

    @router.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "active_streams": len(engine.active())}

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(
            engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return router


@contextlib.asynccontextmanager
async def engine_lifespan(engine: Engine) -> AsyncIterator[None]:
    """Open the engine for the app's lifetime; on shutdown stop its turns (reason
    ``shutdown``) so every stream gets its terminal event."""
    await engine.open()
    try:
        yield
    finally:
        await engine.aclose()


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """A standalone tokenwire ASGI app (FastAPI)."""
    engine = engine if engine is not None else Engine(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with engine_lifespan(engine):
            yield

    app = FastAPI(
        title="tokenwire",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.engine = engine
    install_error_handlers(app)
    app.include_router(create_router(engine))
    return app
