"""The ASGI layer: SSE, WebSocket and REST endpoints over an :class:`~tokenwire.Engine`."""

from .app import create_app, create_router, engine_lifespan

__all__ = ["create_app", "create_router", "engine_lifespan"]
