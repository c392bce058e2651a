"""Per-stream browser tokens: one stream, one tenant, until expiry; anything else is None."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import string
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenwire.auth import StreamTokens

SECRET = b"k" * 32
T0 = 1_700_000_000.0
URLSAFE = string.ascii_letters + string.digits + "-_"


@pytest.fixture
def tokens() -> StreamTokens:
    return StreamTokens(SECRET, ttl_s=900)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(payload_json: bytes, secret: bytes = SECRET) -> str:
    """A token made by hand, following the documented format (pins it)."""
    payload = b64(payload_json)
    mac = hmac.new(secret, b"tokenwire.stream-token.v1\x00" + payload.encode(), hashlib.sha256)
    return payload + "." + b64(mac.digest()[:16])


def test_round_trip_gives_the_tenant(tokens: StreamTokens) -> None:
    token = tokens.issue("tw_a", "acme", now=T0)
    assert tokens.verify(token, "tw_a", now=T0) == "acme"


def test_format_is_documented_payload_and_truncated_hmac(tokens: StreamTokens) -> None:
    token = tokens.issue("tw_a", "acme", now=T0)
    assert token == signed(b'["tw_a","acme",1700000900]')
    mac = token.split(".")[1]
    assert len(base64.urlsafe_b64decode(mac + "==")) * 8 >= 128


def test_a_token_for_one_stream_never_opens_another(tokens: StreamTokens) -> None:
    token = tokens.issue("tw_a", "acme", now=T0)
    for other in ["tw_b", "tw_a ", "tw_", "", "TW_A", "tw_aa"]:
        assert tokens.verify(token, other, now=T0) is None


def test_expiry_is_ttl_after_issue(tokens: StreamTokens) -> None:
    token = tokens.issue("tw_a", "acme", now=T0)
    assert tokens.verify(token, "tw_a", now=T0 - 60) == "acme"  # a clock a bit behind
    assert tokens.verify(token, "tw_a", now=T0 + 899.999) == "acme"
    assert tokens.verify(token, "tw_a", now=T0 + 900) is None
    assert tokens.verify(token, "tw_a", now=T0 + 10**9) is None
    short = StreamTokens(SECRET, ttl_s=5).issue("tw_a", "acme", now=T0)
    assert tokens.verify(short, "tw_a", now=T0 + 4) == "acme"
    assert tokens.verify(short, "tw_a", now=T0 + 5) is None


def test_without_now_the_wall_clock_is_used(tokens: StreamTokens) -> None:
    token = tokens.issue("tw_a", "acme")
    assert tokens.verify(token, "tw_a") == "acme"
    stale = tokens.issue("tw_a", "acme", now=T0 - 10**6)
    assert tokens.verify(stale, "tw_a") is None


def test_tampering_any_character_is_rejected(tokens: StreamTokens) -> None:
    token = tokens.issue("tw_stream", "acme", now=T0)
    payload, mac = token.split(".")
    assert payload and mac
    for index, char in enumerate(token):
        for replacement in {"A", "B", "-", "_", "."} - {char}:
            tampered = token[:index] + replacement + token[index + 1 :]
            assert tokens.verify(tampered, "tw_stream", now=T0) is None, (index, replacement)
        removed = token[:index] + token[index + 1 :]
        assert tokens.verify(removed, "tw_stream", now=T0) is None, index
        inserted = token[:index] + "A" + token[index:]
        assert tokens.verify(inserted, "tw_stream", now=T0) is None, index
    for junk in ["A", "=", "==", ".", "\n", " "]:
        assert tokens.verify(token + junk, "tw_stream", now=T0) is None, junk


def test_rewriting_the_payload_under_the_old_mac_is_rejected(tokens: StreamTokens) -> None:
    token = tokens.issue("tw_a", "acme", now=T0)
    mac = token.split(".")[1]
    for forged in [
        b'["tw_a","globex",1700000900]',  # another tenant
        b'["tw_b","acme",1700000900]',  # another stream
        b'["tw_a","acme",9999999999]',  # a later expiry
    ]:
        assert tokens.verify(b64(forged) + "." + mac, "tw_a", now=T0) is None
        assert tokens.verify(b64(forged) + "." + mac, "tw_b", now=T0) is None


def test_another_secret_neither_verifies_nor_is_verified(tokens: StreamTokens) -> None:
    other = StreamTokens(b"x" * 32, ttl_s=900)
    assert other.verify(tokens.issue("tw_a", "acme", now=T0), "tw_a", now=T0) is None
    assert tokens.verify(other.issue("tw_a", "acme", now=T0), "tw_a", now=T0) is None


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        ".",
        "..",
        "abc",
        "abc.",
        ".abc",
        "a.b.c",
        "é.é",
        "tw_" + "A" * 43,
        "A" * 100_000,
        "\x00.\x00",
    ],
)
def test_malformed_tokens_are_none(tokens: StreamTokens, malformed: str) -> None:
    assert tokens.verify(malformed, "tw_a", now=T0) is None


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"stream":"tw_a"}',
        b'["tw_a","acme"]',
        b'["tw_a","acme",1700000900,"extra"]',
        b'["tw_a","acme",1700000900.5]',
        b'["tw_a","acme",true]',
        b'["tw_a",null,1700000900]',
        b'[1,"acme",1700000900]',
        b'["tw_a","acme","1700000900"]',
        b"\xff\xfe",
    ],
)
def test_genuinely_signed_nonsense_is_none(tokens: StreamTokens, payload: bytes) -> None:
    assert tokens.verify(signed(payload), "tw_a", now=T0) is None


@given(st.text(max_size=300))
def test_verify_never_raises(text: str) -> None:
    assert StreamTokens(SECRET, ttl_s=900).verify(text, "tw_a", now=T0) is None


@pytest.mark.parametrize("stream_id", ["tw_a", "ü/?&=#% \n", "x" * 300])
@pytest.mark.parametrize("tenant", ["acme", "a@b.example:team-1", "日本"])
def test_tokens_are_url_safe(tokens: StreamTokens, stream_id: str, tenant: str) -> None:
    token = tokens.issue(stream_id, tenant, now=T0)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    assert quote(token, safe="") == token
    assert tokens.verify(token, stream_id, now=T0) == tenant
    assert set(token) <= set(URLSAFE + ".")


def test_weak_secrets_and_bad_ttls_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        StreamTokens(b"short", ttl_s=900)
    for ttl in [0, -1, float("nan")]:
        with pytest.raises(ValueError, match="ttl_s"):
            StreamTokens(SECRET, ttl_s=ttl)


def test_payload_is_plain_json_of_stream_tenant_expiry(tokens: StreamTokens) -> None:
    # Not secret (the browser holds it), but it must carry exactly these, so verify can check.
    payload = tokens.issue("tw_a", "acme", now=T0 + 0.9).split(".")[0]
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert decoded == ["tw_a", "acme", 1700000900]
