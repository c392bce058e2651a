"""Who a request is: :class:`Authenticator` turns its headers and query into a
:class:`Principal`, or raises :class:`Unauthenticated`.

Credentials, in the order they are looked at:

1. ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (both may be sent only if equal);
2. ``?token=<stream token>``, only when the caller names the stream being opened — the events
   and status of that one stream, which is all a browser's ``EventSource`` needs.

A presented credential that is wrong fails even when another one would have worked: a bad key
is a client bug worth a clear 401, not something to paper over.

Ownership is the caller's side: record ``principal.tenant`` on each stream it creates, and
answer every other tenant exactly as for a stream that does not exist (:meth:`Principal.owns`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from .keys import KEY_PREFIX, KeyRing
from .settings import AuthSettings
from .tokens import MIN_SECRET_BYTES, StreamTokens


class Unauthenticated(Exception):
    """No valid credential: answer 401 with :attr:`headers` and :attr:`message`.

    ``invalid`` says a credential was presented but rejected (RFC 6750 ``invalid_token``), as
    opposed to none being sent at all.
    """

    code = "unauthorized"

    def __init__(self, message: str, *, invalid: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.invalid = invalid

    @property
    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="tokenwire"'
        if self.invalid:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}


@dataclass(frozen=True, slots=True)
class Principal:
    """The tenant a request acts for. ``tenant`` None: auth is off, and everyone is the one
    anonymous tenant. ``key_name`` is the configured name of the key used, if any (for logs)."""

    tenant: str | None
    key_name: str | None = None

    def owns(self, owner: str | None) -> bool:
        """Whether a stream created by ``owner`` (its creator's ``tenant``) is visible here."""
        # Strict equality, None included: streams made while auth was on stay hidden from the
        # anonymous tenant, and streams made anonymously stay hidden from every key.
        return owner == self.tenant


ANONYMOUS = Principal(None)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # Starlette's Headers match any case; a plain dict may not be lowercased.
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


class Authenticator:
    """Request-time access control built from :class:`AuthSettings`.

    ``enabled`` is False when no keys are configured: :meth:`authenticate` then returns
    :data:`ANONYMOUS` for everyone, and the server must be bound to loopback
    (:func:`tokenwire.auth.check_bind`). The stream token secret comes from the environment
    variable ``settings.token_secret_env`` when it is set and non-empty (``shared_secret`` is
    then True), else from a random per-process secret.
    """

    def __init__(self, settings: AuthSettings, environ: Mapping[str, str] = os.environ) -> None:
        self.settings = settings
        self.keys = KeyRing(settings.keys)
        self.enabled = len(self.keys) > 0
        env_name = settings.token_secret_env
        configured = environ.get(env_name, "") if env_name else ""
        if configured:
            secret = configured.encode("utf-8")
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"${env_name} must hold at least {MIN_SECRET_BYTES} bytes "
                    f"(it holds {len(secret)}); make one with "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
                )
        else:
            secret = secrets.token_bytes(MIN_SECRET_BYTES)
        self.shared_secret = bool(configured)
        self.stream_tokens = StreamTokens(secret, settings.stream_token_ttl_s)

    def issue_token(
        self, principal: Principal, stream_id: str, now: float | None = None
    ) -> str | None:
        """The browser token for a stream ``principal`` just created; None when auth is off
        (nothing to present then: leave it out of the response)."""
        if principal.tenant is None:
            return None
        return self.stream_tokens.issue(stream_id, principal.tenant, now)

    def authenticate(
        self,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        stream_id: str | None = None,
        now: float | None = None,
    ) -> Principal:
        """Who sent this request. Pass ``stream_id`` only for the events and status endpoints
        of that stream: only then is a ``?token=`` accepted, and only for that stream."""
        if not self.enabled:
            return ANONYMOUS
        key = self._presented_key(headers)
        if key is not None:
            found = self.keys.lookup(key)
            if found is None:
                raise Unauthenticated("invalid API key", invalid=True)
            return Principal(found.tenant, found.name)
        token = query.get("token")
        if token is None:
            raise Unauthenticated(
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        if token.startswith(KEY_PREFIX):
            raise Unauthenticated(
                "an API key does not belong in a URL (it ends up in logs; consider replacing "
                "it): send it in the Authorization header, and give browsers the stream token "
                "from the POST response",
                invalid=True,
            )
        if stream_id is None:
            raise Unauthenticated(
                "a stream token only opens its own stream's events and status; "
                "send an API key for anything else",
                invalid=True,
            )
        tenant = self.stream_tokens.verify(token, stream_id, now)
        if tenant is None:
            raise Unauthenticated("invalid or expired stream token", invalid=True)
        return Principal(tenant)

    @staticmethod
    def _presented_key(headers: Mapping[str, str]) -> str | None:
        from_header = _header(headers, "x-api-key")
        authorization = _header(headers, "authorization")
        from_bearer = None
        if authorization is not None:
            scheme, _, credentials = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                raise Unauthenticated(
                    "the Authorization header must be 'Bearer <key>'", invalid=True
                )
            from_bearer = credentials.strip()
        if from_header is not None:
            from_header = from_header.strip()
            if not from_header:
                raise Unauthenticated("the X-API-Key header is empty", invalid=True)
        if from_bearer is not None and from_header is not None and from_bearer != from_header:
            raise Unauthenticated(
                "Authorization and X-API-Key carry different keys: send one", invalid=True
            )
        return from_bearer if from_bearer is not None else from_header
