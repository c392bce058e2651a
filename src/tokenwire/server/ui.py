"""The browser UI, served at ``/`` (plain ES modules and CSS from ``server/static``).

``GET /`` answers ``index.html``; ``GET /ui/<file>`` answers one file of that flat directory.
A name is looked up, never joined into a path: only a plain file name (no separator, no
leading dot) with a known extension is served, so no request can reach outside the directory.
Files are read on each request (a front-end developer's edit shows on reload) and revalidated
by the browser with an ``ETag`` (``Cache-Control: no-cache``): the names carry no content hash,
so a long ``max-age`` would keep stale modules after an upgrade.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

from .errors import ApiError

STATIC_DIR = Path(__file__).with_name("static")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9]+)+")

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# The page renders model output as text nodes only; the policy makes any slip harmless too
# (no inline script, nothing from another origin). `connect-src 'self'` covers ws: and wss:
# of the same host.
_PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def ui_routes(directory: Path = STATIC_DIR) -> APIRouter:
    """The UI's routes, ready for ``include_router``: ``/`` and ``/ui/<file>`` (GET, HEAD)."""
    router = APIRouter(include_in_schema=False)

    @router.api_route("/", methods=["GET", "HEAD"])
    def index(request: Request) -> Response:
        return _asset(directory, "index.html", request, {"Content-Security-Policy": _PAGE_POLICY})

    @router.api_route("/ui/{name}", methods=["GET", "HEAD"])
    def asset(name: str, request: Request) -> Response:
        return _asset(directory, name, request)

    return router


def _asset(
    directory: Path, name: str, request: Request, extra: dict[str, str] | None = None
) -> Response:
    path = _lookup(directory, name)
    if path is None:
        raise ApiError(404, "not_found", "no such file")
    body = path.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", **_SECURITY_HEADERS, **(extra or {})}
    if etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=CONTENT_TYPES[path.suffix], headers=headers)


def _lookup(directory: Path, name: str) -> Path | None:
    """The file ``name`` names in ``directory``, or None: a plain name with a known extension
    only (``..``, separators and dotfiles never match)."""
    if not _NAME.fullmatch(name) or Path(name).suffix not in CONTENT_TYPES:
        return None
    path = directory / name
    return path if path.is_file() else None


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
