"""The ASGI layer: SSE, WebSocket and REST endpoints over an :class:`~tokenwire.Engine`."""

from .app import create_app, create_router, engine_lifespan
from .origins import OriginGuard, OriginPolicy

__all__ = ["OriginGuard", "OriginPolicy", "create_app", "create_router", "engine_lifespan"]
