"""Who may drive the server from a browser: the ``Host`` allow-list, the ``Origin`` allow-list
and CORS, as one pure ASGI layer at the outside of the app.

A browser attaches no tokenwire credential by itself (keys travel in headers, never in
cookies), so with auth on a foreign page holds nothing it could use. With auth off (the
loopback default) every request is trusted, and two things stop a page the user happens to
visit from driving the server:

- **Host.** DNS rebinding points a name the attacker controls at 127.0.0.1: the page is then
  "same-origin" with the server, but its requests say ``Host: evil.example``. Only the names in
  ``allowed_hosts`` are served (any port): by default the loopback names and the bind host.
- **Origin.** A request a browser sends from another origin carries ``Origin``. It passes when
  it is the server's own origin (its authority equals ``Host``) or listed in
  ``allowed_origins``; any other is refused with 403 before the app sees it — a ``text/plain``
  POST never reaches an endpoint, and a WebSocket handshake is refused before ``accept``.
  Requests with no ``Origin`` (curl, SDKs, servers) pass: no browser page can send one.

A listed origin gets CORS: preflights (``OPTIONS`` with ``Access-Control-Request-Method``) are
answered here with 204 and the methods, the requested headers, ``Max-Age`` and, for Chrome's
private network access, ``Allow-Private-Network``; every other response gets
``Access-Control-Allow-Origin`` (the origin itself, with ``Vary: Origin``), the headers a page
needs to read (``Expose-Headers``) and, when configured, ``Allow-Credentials`` (never for the
wildcard ``*``, which would hand any origin the user's cookies of a host app).

Requests with no ``Origin`` or a same-origin one pass with ``send`` untouched, so the hot path
pays two header look-ups and nothing per write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import ServerSettings

__all__ = ["ANY", "OriginGuard", "OriginPolicy", "loopback_hosts"]

ANY = "*"
"""In ``allowed_hosts`` / ``allowed_origins``: every host, every origin."""

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

CORS_METHODS = "GET, HEAD, POST, OPTIONS"

EXPOSED_HEADERS = (
    "Tokenwire-Stream-Token, X-Tokenwire-Stream-Id, Location, Retry-After, "
    "x-should-retry, x-vercel-ai-ui-message-stream"
)
"""Response headers a cross-origin page may read: the stream's token and id (to resume and
cancel), where a background turn lives, and the retry hints."""

_DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """The allow-lists, normalised: ``hosts`` lowercased names (``*.domain`` for subdomains),
    ``origins`` lowercased ``scheme://host[:port]`` with the default port dropped; either may
    hold :data:`ANY`."""

    hosts: frozenset[str]
    origins: frozenset[str]
    allow_credentials: bool = False
    max_age_s: int = 600

    @classmethod
    def from_settings(cls, server: ServerSettings, *, auth_enabled: bool) -> OriginPolicy:
        """The policy of ``[server]``; a list left unset takes the default of the auth mode
        (auth off: loopback names and the bind host, no foreign origin; auth on: any)."""
        if server.allowed_hosts is not None:
            hosts: Iterable[str] = server.allowed_hosts
        else:
            hosts = (ANY,) if auth_enabled else loopback_hosts(server.host)
        if server.allowed_origins is not None:
            origins: Iterable[str] = server.allowed_origins
        else:
            origins = (ANY,) if auth_enabled else ()
        return cls(
            hosts=frozenset(_host_name(h) if h != ANY else ANY for h in hosts),
            origins=frozenset(_normal_origin(o) if o != ANY else ANY for o in origins),
            allow_credentials=server.cors_allow_credentials,
            max_age_s=server.cors_max_age_s,
        )

    def allows_host(self, host: str) -> bool:
        if ANY in self.hosts:
            return True
        name = _host_name(host)
        if name in self.hosts:
            return True
        return any(
            allowed.startswith("*.") and name.endswith(allowed[1:]) for allowed in self.hosts
        )

    def allows_origin(self, origin: str) -> bool:
        return ANY in self.origins or _normal_origin(origin) in self.origins

    def credentials_for(self, origin: str) -> bool:
        return self.allow_credentials and _normal_origin(origin) in self.origins


def loopback_hosts(bind_host: str) -> tuple[str, ...]:
    """The default ``allowed_hosts`` with auth off: the loopback names and, when it is a name
    or an address rather than a wildcard, the host the server binds."""
    extra: tuple[str, ...] = ()
    if bind_host and bind_host not in ("0.0.0.0", "::", "[::]"):
        extra = (f"[{bind_host}]" if ":" in bind_host and "[" not in bind_host else bind_host,)
    return (*LOOPBACK_HOSTS, *extra)


class OriginGuard:
    """ASGI middleware enforcing an :class:`OriginPolicy` on HTTP and WebSocket scopes."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        # No Host at all is HTTP/1.0 or a hand-made request, never a browser (which always
        # sends one): no page can use it to rebind.
        if host is not None and not self.policy.allows_host(host):
            await _refuse(scope, receive, send, "forbidden_host", "this Host is not served")
            return
        if origin is None or (host is not None and _same_origin(origin, host)):
            await self.app(scope, receive, send)
            return
        if not self.policy.allows_origin(origin):
            await _refuse(
                scope, receive, send, "forbidden_origin", "requests from this origin are refused"
            )
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await self._preflight(scope, send, origin)
            return
        await self.app(scope, receive, self._with_cors(send, origin))

    async def _preflight(self, scope: Scope, send: Send, origin: str) -> None:
        headers = [
            *self._cors_headers(origin),
            (b"access-control-allow-methods", CORS_METHODS.encode()),
            (b"access-control-max-age", str(self.policy.max_age_s).encode()),
        ]
        requested = _header(scope, b"access-control-request-headers")
        if requested:
            # The origin is trusted: whatever headers its page sends are fine.
            headers.append((b"access-control-allow-headers", requested))
        if _header(scope, b"access-control-request-private-network") == b"true":
            headers.append((b"access-control-allow-private-network", b"true"))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _with_cors(self, send: Send, origin: str) -> Send:
        extra = [
            *self._cors_headers(origin),
            (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
        ]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return send_with_cors

    def _cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"vary", b"Origin"),
        ]
        if self.policy.credentials_for(origin):
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers


async def _refuse(scope: Scope, receive: Receive, send: Send, code: str, message: str) -> None:
    """403 with the JSON error body; for a WebSocket, before the handshake is accepted."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _host_name(host: str) -> str:
    """``Host`` without its port, lowercased, without a trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    return host.partition(":")[0].rstrip(".")


def _normal_origin(origin: str) -> str:
    scheme, sep, authority = origin.strip().lower().rstrip("/").partition("://")
    if not sep:
        return origin  # "null" and other opaque origins: only ever equal to themselves
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and authority.endswith(":" + default):
        authority = authority[: -len(default) - 1]
    return f"{scheme}://{authority}"


def _same_origin(origin: str, host: str) -> bool:
    """Whether ``origin`` is the server's own: the authority the browser loaded the page from
    is the one this request is addressed to (the scheme may differ behind a TLS proxy)."""
    normal = _normal_origin(origin)
    scheme, sep, authority = normal.partition("://")
    if not sep:
        return False
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(":" + default):
        host = host[: -len(default) - 1]
    return authority == host
