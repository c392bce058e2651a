"""What ``tokenwire keys new`` prints: a fresh key, shown once, and the config lines that let
it in. Only the hash goes into the config; the key itself is not stored anywhere."""

from __future__ import annotations

from .keys import check_tenant, generate_key, hash_key


def _toml_string(value: str) -> str:
    # A TOML basic string: escape what TOML forbids raw (quote, backslash, control characters).
    escaped = []
    for char in value:
        if char in ('"', "\\"):
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def new_key_snippet(tenant: str, name: str | None = None) -> tuple[str, str]:
    """A new key for ``tenant``: (the plaintext key to show once, the ``[[auth.keys]]`` TOML
    snippet to paste into the config). :class:`ValueError` for an invalid tenant name."""
    check_tenant(tenant)
    key = generate_key()
    lines = ["[[auth.keys]]", f"tenant = {_toml_string(tenant)}", f'hash = "{hash_key(key)}"']
    if name:
        lines.append(f"name = {_toml_string(name)}")
    return key, "\n".join(lines) + "\n"
