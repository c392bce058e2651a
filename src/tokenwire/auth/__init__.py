"""Access control: API keys (stored hashed, each one a tenant), tenant-scoped streams, and
short-lived per-stream tokens for browsers.

Startup: ``auth = Authenticator(settings.auth)``, then
``check_bind(host, auth_enabled=auth.enabled, allow_insecure=settings.auth.allow_insecure_bind)``
before binding. Each request: ``auth.authenticate(headers, query, stream_id)`` gives a
:class:`Principal` or raises :class:`Unauthenticated` (401). A stream records the tenant that
created it; to any other tenant it answers as if it did not exist.

See :mod:`.keys` for key format and hashing, :mod:`.tokens` for the browser tokens,
:mod:`.principal` for the credential rules and :mod:`.bind` for the loopback rule.
"""

from __future__ import annotations

from .bind import InsecureBind, check_bind, is_loopback
from .cli import new_key_snippet
from .keys import ApiKey, KeyEntry, KeyRing, check_hash, check_tenant, generate_key, hash_key
from .principal import ANONYMOUS, Authenticator, Principal, Unauthenticated
from .settings import ApiKeyEntry, AuthSettings
from .tokens import StreamTokens

__all__ = [
    "ANONYMOUS",
    "ApiKey",
    "ApiKeyEntry",
    "AuthSettings",
    "Authenticator",
    "InsecureBind",
    "KeyEntry",
    "KeyRing",
    "Principal",
    "StreamTokens",
    "Unauthenticated",
    "check_bind",
    "check_hash",
    "check_tenant",
    "generate_key",
    "hash_key",
    "is_loopback",
    "new_key_snippet",
]
