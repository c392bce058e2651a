"""The Vercel AI SDK UI message stream endpoint (``useChat`` frontends)."""

from __future__ import annotations

from fastapi import APIRouter

from ..auth import Authenticator
from ..engine import Engine


def aisdk_routes(engine: Engine, auth: Authenticator) -> APIRouter:
    """The AI SDK endpoint, ready for ``include_router``."""
    return APIRouter()
