"""The startup rule: auth off is allowed on loopback only, unless explicitly overridden."""

from __future__ import annotations

import logging

import pytest

from tokenwire.auth import InsecureBind, check_bind, is_loopback

LOOPBACK = [
    "127.0.0.1",
    "127.0.0.2",
    "127.1.2.3",
    "127.255.255.254",
    "localhost",
    "LocalHost",
    "localhost.",
    "::1",
    "[::1]",
    "0:0:0:0:0:0:0:1",
    "0000:0000:0000:0000:0000:0000:0000:0001",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::1%lo",
]
NOT_LOOPBACK = [
    "0.0.0.0",
    "::",
    "[::]",
    "",
    "0",
    "192.168.1.10",
    "10.0.0.1",
    "128.0.0.1",
    "126.255.255.255",
    "::2",
    "::ffff:10.0.0.1",
    "::ffff:0.0.0.0",
    "fe80::1",
    "2001:db8::1",
    "example.com",
    "localhost.example.com",
    "127.0.0.1.example.com",
    "my-laptop",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_forms(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, auth_enabled=False, allow_insecure=False)


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_everything_else_is_not_loopback_and_refused_without_keys(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(InsecureBind) as caught:
        check_bind(host, auth_enabled=False, allow_insecure=False)
    message = str(caught.value)
    assert "tokenwire keys new --tenant NAME" in message
    assert "[[auth.keys]]" in message
    assert "127.0.0.1" in message
    assert (host or '""') in message


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_keys_make_any_address_fine(host: str) -> None:
    check_bind(host, auth_enabled=True, allow_insecure=False)


def test_the_escape_hatch_starts_but_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tokenwire.auth"):
        check_bind("0.0.0.0", auth_enabled=False, allow_insecure=True)
    assert "allow_insecure_bind" in caplog.text and "0.0.0.0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tokenwire.auth"):
        check_bind("127.0.0.1", auth_enabled=False, allow_insecure=True)
        check_bind("0.0.0.0", auth_enabled=True, allow_insecure=True)
    assert caplog.text == ""
