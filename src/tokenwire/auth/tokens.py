"""Per-stream tokens for browsers, whose ``EventSource`` cannot send an API key header.

The POST that starts a stream answers with a token; the page then opens
``GET /v1/streams/{id}/events?token=...``. A token opens that one stream, for that tenant,
until it expires — never another stream, never a new one, and never for longer than
``ttl_s``. Putting it in a URL (and so in access logs) is acceptable for exactly that reason,
which is why an API key must never go there.

Format, all URL-safe (``A-Z a-z 0-9 - _ .``), no padding::

    base64url(json [stream_id, tenant, expires_unix_s]) "." base64url(HMAC-SHA256[:16])

The MAC covers a fixed domain label and the payload *as sent*, so a token is checked before a
byte of it is parsed. Time is wall-clock seconds (not monotonic) because a token may be
checked by another gateway that shares the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time

_DOMAIN = b"tokenwire.stream-token.v1\x00"
_MAC_BYTES = 16  # 128 bits: forging one means guessing a 128-bit value per try
MIN_SECRET_BYTES = 32
_MAX_TOKEN_CHARS = 4096


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


class StreamTokens:
    """Issues and checks stream tokens signed with ``secret``; :meth:`verify` never raises."""

    def __init__(self, secret: bytes, ttl_s: float) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the stream token secret must be at least {MIN_SECRET_BYTES} bytes "
                f"(got {len(secret)}); make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self._secret = secret
        self.ttl_s = ttl_s

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._secret, _DOMAIN + payload.encode("ascii"), hashlib.sha256)
        return _b64encode(digest.digest()[:_MAC_BYTES])

    def issue(self, stream_id: str, tenant: str, now: float | None = None) -> str:
        """A token that opens ``stream_id`` for ``tenant`` until ``now + ttl_s``."""
        issued = time.time() if now is None else now
        # Truncating the expiry can only shorten a token's life, never lengthen it.
        expires = int(issued + self.ttl_s)
        body = json.dumps([stream_id, tenant, expires], separators=(",", ":"))
        payload = _b64encode(body.encode("utf-8"))
        return payload + "." + self._mac(payload)

    def verify(self, token: str, stream_id: str, now: float | None = None) -> str | None:
        """The tenant ``token`` was issued to, if it is genuine, unexpired and for
        ``stream_id``; None otherwise (whatever is wrong with it)."""
        if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            return None
        payload, dot, mac = token.partition(".")
        if not dot or not hmac.compare_digest(self._mac(payload), mac):
            return None
        try:
            fields = json.loads(_b64decode(payload))
        except (binascii.Error, ValueError):
            return None  # only reachable with our own secret: a bug, not an attack
        if not (isinstance(fields, list) and len(fields) == 3):
            return None
        token_stream, tenant, expires = fields
        if not (
            isinstance(token_stream, str)
            and isinstance(tenant, str)
            and isinstance(expires, int)
            and not isinstance(expires, bool)
        ):
            return None
        if token_stream != stream_id:
            return None
        current = time.time() if now is None else now
        if current >= expires:
            return None
        return tenant
