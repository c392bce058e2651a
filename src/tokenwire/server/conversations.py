"""``/v1/conversations``: create a conversation, read it with its turns' final records, page
through them. Each tenant sees only its own; another tenant's id is a 404 like a missing one.

A turn joins a conversation by naming its ``conversation_id`` in ``POST /v1/streams``; the
engine then sends the conversation's history with it (see :mod:`tokenwire.context`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse

from ..auth import Authenticator
from ..engine import Engine
from ..store import Store
from .access import principal
from .body import read_json_object
from .errors import ApiError

MAX_PAGE = 200
MAX_METADATA_BYTES = 16_384


def conversation_routes(engine: Engine, auth: Authenticator) -> APIRouter:
    router = APIRouter()

    def store() -> Store:
        if engine.store is None:
            raise ApiError(501, "store_disabled", "persistence is off ([store] url is empty)")
        return engine.store

    @router.post("/v1/conversations", status_code=201)
    async def create_conversation(request: Request) -> JSONResponse:
        tenant = principal(auth, request).tenant
        db = store()
        body: dict[str, Any] = {}
        if request.headers.get("content-length") not in (None, "0"):
            body = await read_json_object(request, MAX_METADATA_BYTES)
        unknown = set(body) - {"metadata"}
        if unknown:
            raise ApiError(422, "invalid_request", f"unknown fields: {', '.join(sorted(unknown))}")
        metadata = body.get("metadata", {})
        if not isinstance(metadata, dict):
            raise ApiError(422, "invalid_request", "metadata must be an object")
        created = await db.create_conversation(metadata, tenant=tenant)
        return JSONResponse(
            created, status_code=201, headers={"Location": f"/v1/conversations/{created['id']}"}
        )

    @router.get("/v1/conversations/{conversation_id}")
    async def get_conversation(conversation_id: str, request: Request) -> dict[str, Any]:
        tenant = principal(auth, request).tenant
        found = None
        if len(conversation_id) <= 64:
            found = await store().get_conversation(conversation_id, tenant=tenant)
        if found is None:
            raise ApiError(404, "conversation_not_found", f"no conversation {conversation_id!r}")
        return found

    @router.get("/v1/conversations")
    async def list_conversations(
        request: Request,
        limit: int = Query(default=50, ge=1, le=MAX_PAGE),
        cursor: str | None = Query(default=None, max_length=512),
    ) -> dict[str, Any]:
        tenant = principal(auth, request).tenant
        try:
            page, next_cursor = await store().list_conversations(limit, cursor, tenant=tenant)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        return {"conversations": page, "next_cursor": next_cursor}

    return router
