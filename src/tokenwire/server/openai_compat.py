"""The OpenAI-compatible endpoints: ``POST /v1/chat/completions`` and ``GET /v1/models``."""

from __future__ import annotations

from fastapi import APIRouter

from ..auth import Authenticator
from ..engine import Engine


def openai_routes(engine: Engine, auth: Authenticator) -> APIRouter:
    """The OpenAI-compatible endpoints, ready for ``include_router``."""
    return APIRouter()
