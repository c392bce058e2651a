"""The authenticator: which credentials open what, and the shape of every refusal."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from starlette.datastructures import Headers, QueryParams

from tokenwire.auth import (
    ANONYMOUS,
    ApiKeyEntry,
    Authenticator,
    AuthSettings,
    Principal,
    Unauthenticated,
    generate_key,
    hash_key,
)

T0 = 1_700_000_000.0
ACME_OLD, ACME_NEW, GLOBEX = generate_key(), generate_key(), generate_key()
SHARED = {"TOKENWIRE_TOKEN_SECRET": "s" * 40}


def settings(**overrides: object) -> AuthSettings:
    keys = [
        ApiKeyEntry(tenant="acme", hash=hash_key(ACME_OLD), name="old"),
        ApiKeyEntry(tenant="acme", hash=hash_key(ACME_NEW), name="new"),
        ApiKeyEntry(tenant="globex", hash=hash_key(GLOBEX)),
    ]
    return AuthSettings.model_validate({"keys": keys, **overrides})


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(settings(), environ={})


def refusal(
    auth: Authenticator,
    headers: Mapping[str, str],
    query: Mapping[str, str] | None = None,
    stream_id: str | None = None,
) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        auth.authenticate(headers, query or {}, stream_id, now=T0)
    return caught.value


def test_no_keys_means_auth_off_and_everyone_anonymous() -> None:
    auth = Authenticator(AuthSettings(), environ={})
    assert not auth.enabled
    for headers in [{}, {"authorization": "Bearer nonsense"}, {"x-api-key": ""}]:
        assert auth.authenticate(headers, {"token": "junk"}, "tw_a") is ANONYMOUS
    assert ANONYMOUS == Principal(None)
    assert auth.issue_token(ANONYMOUS, "tw_a") is None


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {GLOBEX}"},
        {"authorization": f"bearer {GLOBEX}"},
        {"authorization": f"  BEARER   {GLOBEX}  "},
        {"Authorization": f"Bearer {GLOBEX}"},  # a plain dict that kept the header's case
        {"x-api-key": GLOBEX},
        {"X-Api-Key": f" {GLOBEX} "},
        {"authorization": f"Bearer {GLOBEX}", "x-api-key": GLOBEX},
        Headers({"Authorization": f"Bearer {GLOBEX}"}),
        Headers({"X-API-KEY": GLOBEX}),
    ],
)
def test_a_configured_key_in_either_header_gives_its_tenant(
    auth: Authenticator, headers: Mapping[str, str]
) -> None:
    assert auth.enabled
    assert auth.authenticate(headers, {}) == Principal("globex")


def test_rotated_keys_are_the_same_tenant(auth: Authenticator) -> None:
    old = auth.authenticate({"authorization": f"Bearer {ACME_OLD}"}, {})
    new = auth.authenticate({"x-api-key": ACME_NEW}, {})
    assert (old.tenant, old.key_name) == ("acme", "old")
    assert (new.tenant, new.key_name) == ("acme", "new")
    assert old.owns("acme") and new.owns("acme")


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"authorization": f"Bearer {GLOBEX}x"}, "invalid API key"),
        ({"x-api-key": generate_key()}, "invalid API key"),
        ({"authorization": f"Basic {GLOBEX}"}, "must be 'Bearer <key>'"),
        ({"authorization": GLOBEX}, "must be 'Bearer <key>'"),
        ({"authorization": "Bearer "}, "must be 'Bearer <key>'"),
        ({"x-api-key": "  "}, "X-API-Key header is empty"),
        ({"authorization": f"Bearer {GLOBEX}", "x-api-key": ACME_NEW}, "different keys"),
    ],
)
def test_a_wrong_key_is_refused_as_invalid(
    auth: Authenticator, headers: dict[str, str], message: str
) -> None:
    err = refusal(auth, headers)
    assert message in err.message
    assert err.invalid and err.code == "unauthorized"
    assert err.headers == {"WWW-Authenticate": 'Bearer realm="tokenwire", error="invalid_token"'}
    assert GLOBEX not in err.message and ACME_NEW not in err.message


def test_no_credential_is_refused_with_a_plain_challenge(auth: Authenticator) -> None:
    err = refusal(auth, {"accept": "text/event-stream"})
    assert "Authorization: Bearer" in err.message and not err.invalid
    assert err.headers == {"WWW-Authenticate": 'Bearer realm="tokenwire"'}
    assert refusal(auth, {}, {}, "tw_a").message == err.message


def test_a_stream_token_opens_only_its_stream_and_only_when_named(auth: Authenticator) -> None:
    creator = auth.authenticate({"x-api-key": ACME_NEW}, {})
    token = auth.issue_token(creator, "tw_a", now=T0)
    assert token is not None
    reader = auth.authenticate({}, QueryParams({"token": token}), "tw_a", now=T0)
    assert reader == Principal("acme") and reader.owns("acme") and not reader.owns("globex")
    assert "only opens its own stream" in refusal(auth, {}, {"token": token}).message
    assert "invalid or expired" in refusal(auth, {}, {"token": token}, "tw_b").message
    with pytest.raises(Unauthenticated, match="invalid or expired"):
        auth.authenticate({}, {"token": token}, "tw_a", now=T0 + 900)


def test_a_presented_key_is_judged_even_when_a_token_is_there(auth: Authenticator) -> None:
    token = auth.stream_tokens.issue("tw_a", "acme", now=T0)
    with_key = auth.authenticate({"x-api-key": GLOBEX}, {"token": token}, "tw_a", now=T0)
    assert with_key == Principal("globex")  # the key speaks; the stream's owner check follows
    assert refusal(auth, {"x-api-key": "wrong"}, {"token": token}, "tw_a").invalid


def test_an_api_key_in_the_url_is_refused_without_echoing_it(auth: Authenticator) -> None:
    err = refusal(auth, {}, {"token": GLOBEX}, "tw_a")
    assert "does not belong in a URL" in err.message and GLOBEX not in err.message


def test_ownership_is_strict_equality() -> None:
    assert Principal("acme").owns("acme")
    assert not Principal("acme").owns("globex")
    assert not Principal("acme").owns(None)  # made while auth was off
    assert ANONYMOUS.owns(None)
    assert not ANONYMOUS.owns("acme")  # made while auth was on


def test_gateways_sharing_the_env_secret_accept_each_others_tokens() -> None:
    one, two = Authenticator(settings(), environ=SHARED), Authenticator(settings(), environ=SHARED)
    assert one.shared_secret and two.shared_secret
    token = one.stream_tokens.issue("tw_a", "acme", now=T0)
    assert two.authenticate({}, {"token": token}, "tw_a", now=T0) == Principal("acme")
    assert two.stream_tokens.verify(token, "tw_a", now=T0) == "acme"


@pytest.mark.parametrize(
    ("environ", "overrides"),
    [
        ({}, {}),
        ({"TOKENWIRE_TOKEN_SECRET": ""}, {}),  # set but empty: unset
        (SHARED, {"token_secret_env": None}),  # env secret switched off
        (SHARED, {"token_secret_env": "OTHER_SECRET"}),  # another variable, unset
    ],
)
def test_without_the_env_secret_each_gateway_has_its_own(
    environ: dict[str, str], overrides: dict[str, object]
) -> None:
    one = Authenticator(settings(**overrides), environ=environ)
    two = Authenticator(settings(**overrides), environ=environ)
    assert not one.shared_secret
    token = one.stream_tokens.issue("tw_a", "acme", now=T0)
    assert one.stream_tokens.verify(token, "tw_a", now=T0) == "acme"
    assert two.stream_tokens.verify(token, "tw_a", now=T0) is None


def test_the_env_variable_name_is_configurable() -> None:
    environ = {"GATEWAY_SECRET": "g" * 32}
    one = Authenticator(settings(token_secret_env="GATEWAY_SECRET"), environ=environ)
    two = Authenticator(settings(token_secret_env="GATEWAY_SECRET"), environ=environ)
    assert one.shared_secret
    token = one.stream_tokens.issue("tw_a", "acme", now=T0)
    assert two.stream_tokens.verify(token, "tw_a", now=T0) == "acme"


def test_a_short_env_secret_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match=r"\$TOKENWIRE_TOKEN_SECRET must hold at least 32"):
        Authenticator(settings(), environ={"TOKENWIRE_TOKEN_SECRET": "short"})


def test_the_token_ttl_comes_from_settings() -> None:
    auth = Authenticator(settings(stream_token_ttl_s=30), environ={})
    token = auth.issue_token(Principal("acme"), "tw_a", now=T0)
    assert token is not None
    assert auth.authenticate({}, {"token": token}, "tw_a", now=T0 + 29) == Principal("acme")
    with pytest.raises(Unauthenticated):
        auth.authenticate({}, {"token": token}, "tw_a", now=T0 + 30)


def test_malformed_config_refuses_to_build() -> None:
    class Entry:
        tenant, hash, name = "acme", "sha256:zz", None

    with pytest.raises(ValueError, match="API key #1"):
        Authenticator(AuthSettings.model_construct(keys=[Entry()]), environ={})
