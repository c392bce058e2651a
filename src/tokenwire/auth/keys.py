"""API keys: made here, stored only as hashes, each one naming its tenant.

A key is ``tw_`` followed by 43 urlsafe characters (256 random bits). The configuration holds
only ``sha256:<hex>`` of it (:func:`hash_key`), so a leaked config file opens nothing. A
:class:`KeyRing` maps a presented key to its tenant; several keys may share a tenant, which is
how a key is rotated: add the new one, move the clients, remove the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

KEY_PREFIX = "tw_"
HASH_PREFIX = "sha256:"
_KEY_BYTES = 32
_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
# Tenants end up in logs, records and tokens: keep them plain identifiers.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
_TENANT_RE = re.compile(TENANT_PATTERN)


def generate_key() -> str:
    """A new API key: ``tw_`` + 256 random bits, urlsafe. Show it once; store its hash."""
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def hash_key(key: str) -> str:
    """What the configuration stores for ``key``: ``sha256:<64 hex digits>``."""
    # One fast, unsalted SHA-256 is right here and would be wrong for passwords: a password is
    # guessable, so its hash must be slow and salted to make each guess expensive; a generated
    # key has 256 random bits, so no dictionary or brute force gets anywhere whatever the hash
    # costs. Fast and unsalted also lets a presented key be found with one dict lookup.
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_hash(value: str) -> str:
    """``value`` as a stored key hash (hex lowercased), or :class:`ValueError` saying why not."""
    if value.startswith(KEY_PREFIX):
        # Never echo it back: it is most likely a real key pasted where its hash belongs.
        raise ValueError(
            "this looks like a plaintext API key, not its hash: configure hash = "
            '"sha256:..." (printed by `tokenwire keys new --tenant NAME`), and since the key '
            "has now been in a config file, consider replacing it"
        )
    normalized = value.strip().lower()
    if not _HASH_RE.fullmatch(normalized):
        raise ValueError(
            f"an API key hash is {HASH_PREFIX!r} followed by 64 hex digits "
            f"(got {len(value)} characters); create a key and its hash with "
            "`tokenwire keys new --tenant NAME`"
        )
    return normalized


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant name, else :class:`ValueError` saying why not."""
    if not _TENANT_RE.fullmatch(tenant):
        raise ValueError(
            f"tenant {tenant!r} is not a valid name: 1 to 128 characters, letters, digits and "
            "'._:@-', starting with a letter or digit"
        )
    return tenant


class KeyEntry(Protocol):
    """One configured key, as :class:`~tokenwire.auth.ApiKeyEntry` holds it."""

    @property
    def tenant(self) -> str: ...

    @property
    def hash(self) -> str: ...

    @property
    def name(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ApiKey:
    """Who a matched key belongs to: its tenant, and the configured name of the key (for logs)."""

    tenant: str
    name: str | None = None


class KeyRing:
    """The configured keys, by digest. Build it once at startup; lookups never raise."""

    def __init__(self, entries: Iterable[KeyEntry]) -> None:
        self._by_digest: dict[bytes, tuple[bytes, ApiKey]] = {}
        for index, entry in enumerate(entries):
            where = f"API key #{index + 1}" + (f" ({entry.name!r})" if entry.name else "")
            try:
                tenant = check_tenant(entry.tenant)
                digest = bytes.fromhex(check_hash(entry.hash).removeprefix(HASH_PREFIX))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            previous = self._by_digest.get(digest)
            if previous is not None and previous[1].tenant != tenant:
                raise ValueError(
                    f"{where}: the same key hash is configured for tenants "
                    f"{previous[1].tenant!r} and {tenant!r}; a key belongs to one tenant"
                )
            self._by_digest[digest] = (digest, ApiKey(tenant, entry.name))

    def __len__(self) -> int:
        return len(self._by_digest)

    @property
    def tenants(self) -> frozenset[str]:
        return frozenset(key.tenant for _, key in self._by_digest.values())

    def lookup(self, key: str) -> ApiKey | None:
        """The configured key ``key`` is, or None."""
        presented = hashlib.sha256(key.encode("utf-8")).digest()
        # The dict lookup's timing depends only on SHA-256 of what the caller sent, never on a
        # prefix of a stored key: learning how many digest bytes matched brings no one closer to
        # a preimage. The constant-time comparison is the explicit check that a match is one.
        found = self._by_digest.get(presented)
        if found is None or not hmac.compare_digest(found[0], presented):
            return None
        return found[1]

    def tenant_for(self, key: str) -> str | None:
        """The tenant ``key`` belongs to, or None when it is not a configured key."""
        found = self.lookup(key)
        return found.tenant if found is not None else None
