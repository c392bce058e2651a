"""The browser UI, served at ``/`` (plain ES modules and CSS from ``server/static``)."""

from __future__ import annotations

from fastapi import APIRouter


def ui_routes() -> APIRouter:
    """The UI's routes, ready for ``include_router``."""
    return APIRouter()
