"""API keys: generation, hashing at rest, and the key ring's key → tenant mapping."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

import pytest

from tokenwire.auth import ApiKey, ApiKeyEntry, KeyRing, check_hash, generate_key, hash_key


@dataclass
class Entry:
    tenant: str
    hash: str
    name: str | None = None


def test_generated_keys_are_prefixed_urlsafe_and_carry_256_bits() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert key.startswith("tw_")
        body = key.removeprefix("tw_")
        assert re.fullmatch(r"[A-Za-z0-9_-]+", body)
        assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) >= 32


def test_hash_is_sha256_hex_of_the_key() -> None:
    key = generate_key()
    assert hash_key(key) == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    assert hash_key(key) == hash_key(key)
    assert hash_key(key) != hash_key(key + "x")
    assert check_hash(hash_key(key)) == hash_key(key)


def test_ring_maps_a_key_to_its_tenant_and_nothing_else() -> None:
    acme, globex = generate_key(), generate_key()
    ring = KeyRing([Entry("acme", hash_key(acme), "ci"), Entry("globex", hash_key(globex))])
    assert ring.tenant_for(acme) == "acme"
    assert ring.tenant_for(globex) == "globex"
    assert ring.lookup(acme) == ApiKey("acme", "ci")
    assert ring.lookup(globex) == ApiKey("globex", None)
    for stranger in [generate_key(), "", acme[:-1], acme + "A", acme.upper(), hash_key(acme)]:
        assert ring.tenant_for(stranger) is None
    assert len(ring) == 2 and ring.tenants == {"acme", "globex"}


def test_rotation_two_keys_one_tenant() -> None:
    old, new = generate_key(), generate_key()
    ring = KeyRing(
        [
            ApiKeyEntry(tenant="acme", hash=hash_key(old), name="old"),
            ApiKeyEntry(tenant="acme", hash=hash_key(new), name="new"),
        ]
    )
    assert ring.tenant_for(old) == ring.tenant_for(new) == "acme"
    assert ring.lookup(old) == ApiKey("acme", "old")
    assert ring.lookup(new) == ApiKey("acme", "new")
    # Retiring the old key: the same config without its entry.
    retired = KeyRing([Entry("acme", hash_key(new))])
    assert retired.tenant_for(old) is None and retired.tenant_for(new) == "acme"


def test_hash_hex_case_does_not_matter() -> None:
    key = generate_key()
    ring = KeyRing([Entry("acme", "sha256:" + hash_key(key).removeprefix("sha256:").upper())])
    assert ring.tenant_for(key) == "acme"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256:",
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "g" * 64,
        "md5:" + "a" * 32,
        "a" * 64,  # the hex without its prefix
        "sha512:" + "a" * 128,
    ],
)
def test_malformed_hashes_are_refused_at_construction(bad: str) -> None:
    with pytest.raises(ValueError, match=r"API key #2 \('second'\).*'sha256:' followed by 64 hex"):
        KeyRing([Entry("acme", hash_key(generate_key())), Entry("acme", bad, "second")])


def test_a_plaintext_key_in_place_of_its_hash_is_refused_without_echoing_it() -> None:
    key = generate_key()
    with pytest.raises(ValueError, match="plaintext API key") as caught:
        KeyRing([Entry("acme", key)])
    assert key not in str(caught.value)
    assert key.removeprefix("tw_") not in str(caught.value)


def test_one_key_for_two_tenants_is_refused() -> None:
    digest = hash_key(generate_key())
    with pytest.raises(ValueError, match="'acme' and 'globex'"):
        KeyRing([Entry("acme", digest), Entry("globex", digest)])
    assert len(KeyRing([Entry("acme", digest), Entry("acme", digest)])) == 1


@pytest.mark.parametrize("tenant", ["", " acme", "acme corp", "-acme", "a" * 129, "ac\nme"])
def test_invalid_tenants_are_refused(tenant: str) -> None:
    with pytest.raises(ValueError, match="not a valid name"):
        KeyRing([Entry(tenant, hash_key(generate_key()))])
