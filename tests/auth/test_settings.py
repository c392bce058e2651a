"""The ``[auth]`` settings section: defaults, validation, and refusing what it does not know."""

from __future__ import annotations

import tomllib

import pytest
from pydantic import ValidationError

from tokenwire.auth import ApiKeyEntry, AuthSettings, KeyRing, generate_key, hash_key


def test_defaults_mean_auth_off_with_an_env_secret_name() -> None:
    settings = AuthSettings()
    assert settings.keys == []
    assert settings.stream_token_ttl_s == 900
    assert settings.token_secret_env == "TOKENWIRE_TOKEN_SECRET"
    assert settings.allow_insecure_bind is False


def test_toml_section_round_trips_into_a_key_ring() -> None:
    key = generate_key()
    data = tomllib.loads(f"""
[auth]
stream_token_ttl_s = 60
token_secret_env = "GATEWAY_SECRET"

[[auth.keys]]
tenant = "acme"
hash = "{hash_key(key)}"
name = "ci"
""")
    settings = AuthSettings.model_validate(data["auth"])
    assert settings.stream_token_ttl_s == 60 and settings.token_secret_env == "GATEWAY_SECRET"
    assert settings.keys == [ApiKeyEntry(tenant="acme", hash=hash_key(key), name="ci")]
    assert KeyRing(settings.keys).tenant_for(key) == "acme"


@pytest.mark.parametrize(
    "bad",
    [
        {"keys": [{"tenant": "acme", "hash": "sha256:nothex"}]},
        {"keys": [{"tenant": "acme", "hash": generate_key()}]},
        {"keys": [{"tenant": "", "hash": hash_key("x")}]},
        {"keys": [{"tenant": "a b", "hash": hash_key("x")}]},
        {"keys": [{"hash": hash_key("x")}]},
        {"keys": [{"tenant": "acme", "hash": hash_key("x"), "key": "tw_x"}]},
        {"stream_token_ttl_s": 0},
        {"token_secret": "inline secrets are not a setting"},
    ],
)
def test_invalid_sections_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AuthSettings.model_validate(bad)


def test_a_malformed_hash_error_says_how_to_make_one() -> None:
    with pytest.raises(ValidationError, match="tokenwire keys new --tenant NAME"):
        ApiKeyEntry(tenant="acme", hash="sha256:abc")
