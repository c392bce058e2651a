"""The auth package's public API is what ``__all__`` says: pinned so a change is deliberate."""

from __future__ import annotations

import tokenwire.auth


def test_auth_api() -> None:
    names = tokenwire.auth.__all__

    def isort_style(name: str) -> tuple[int, str]:  # constants, classes, then the rest
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert names == sorted(names, key=isort_style)
    for name in names:
        assert hasattr(tokenwire.auth, name), name
    assert names == [
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
