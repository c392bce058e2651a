"""``tokenwire keys new``'s output: a key shown once, and a config snippet that lets it in."""

from __future__ import annotations

import tomllib

import pytest

from tokenwire.auth import AuthSettings, KeyRing, hash_key, new_key_snippet


def ring_from(snippet: str) -> tuple[AuthSettings, KeyRing]:
    settings = AuthSettings.model_validate(tomllib.loads(snippet)["auth"])
    return settings, KeyRing(settings.keys)


def test_snippet_opens_the_printed_key_for_the_tenant() -> None:
    key, snippet = new_key_snippet("acme", None)
    assert key.startswith("tw_")
    assert snippet.startswith("[[auth.keys]]\n")
    assert key not in snippet and hash_key(key) in snippet
    settings, ring = ring_from(snippet)
    assert settings.keys[0].name is None and "name" not in snippet
    assert ring.tenant_for(key) == "acme"


def test_each_call_makes_a_new_key() -> None:
    (one, _), (two, _) = new_key_snippet("acme", None), new_key_snippet("acme", None)
    assert one != two


@pytest.mark.parametrize(
    "name", ["ci", 'the "prod" box', "back\\slash", "tab\tnew\nline\x7f", "日本 ✓", ""]
)
def test_any_name_survives_the_round_trip(name: str) -> None:
    key, snippet = new_key_snippet("acme", name)
    settings, ring = ring_from(snippet)
    assert settings.keys[0].name == (name or None)
    assert ring.lookup(key) is not None and ring.tenant_for(key) == "acme"


def test_snippets_for_rotation_append_into_one_config() -> None:
    old, first = new_key_snippet("acme", "old")
    new, second = new_key_snippet("acme", "new")
    _, ring = ring_from(first + "\n" + second)
    assert ring.tenant_for(old) == ring.tenant_for(new) == "acme"


@pytest.mark.parametrize("tenant", ["", "acme corp", 'a"b'])
def test_an_invalid_tenant_is_refused_before_a_key_is_made(tenant: str) -> None:
    with pytest.raises(ValueError, match="not a valid name"):
        new_key_snippet(tenant, None)
