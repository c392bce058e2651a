"""The startup rule: no keys is fine on loopback, and refused anywhere else.

Without keys every stream is readable and cancellable by anyone who can connect, which on
127.0.0.1 means this machine's own users and nowhere else. Call :func:`check_bind` with the
address about to be bound, before binding it.
"""

from __future__ import annotations

import ipaddress
import logging

logger = logging.getLogger("tokenwire.auth")


class InsecureBind(Exception):
    """The server would serve a non-loopback address with auth off: refuse to start."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on loopback only: ``localhost``, 127.0.0.0/8, ``::1``
    (in any spelling, bracketed or IPv4-mapped). Wildcards (``0.0.0.0``, ``::``, ``""``) and
    every other name or address are not; names are not resolved."""
    candidate = host.lower()
    if candidate in ("localhost", "localhost."):
        return True
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_bind(host: str, *, auth_enabled: bool, allow_insecure: bool) -> None:
    """Refuse (:class:`InsecureBind`) to serve ``host`` with auth off unless it is loopback or
    ``allow_insecure`` (``[auth] allow_insecure_bind``) says so, which is logged as a warning."""
    if auth_enabled or is_loopback(host):
        return
    shown = host or '""'
    if allow_insecure:
        logger.warning(
            "serving %s with no API keys because [auth] allow_insecure_bind = true: anyone who "
            "can reach it can read and cancel every stream",
            shown,
        )
        return
    raise InsecureBind(
        f"refusing to serve {shown} with no API keys: anyone who could reach it could read and "
        "cancel every stream. Either configure keys: run `tokenwire keys new --tenant NAME` and "
        "paste the [[auth.keys]] snippet it prints into the config file; or bind loopback "
        '(--host 127.0.0.1, or [server] host = "127.0.0.1"). Only behind a proxy that '
        "authenticates every request: [auth] allow_insecure_bind = true."
    )
