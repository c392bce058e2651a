"""Test-wide guards. Tests talk to real servers on loopback only: a connection to any other
address fails at once instead of reaching the network by accident."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.databases import PostgresServer, fresh_database, postgres_server, sqlite_url
from tests.support.redis import RedisServer, redis_server

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check(address: Any) -> None:
    if isinstance(address, tuple) and address:
        host = address[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ConnectionRefusedError(f"tests may only reach loopback, not {host}") from None
            return
        if not ip.is_loopback:
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {host}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check(address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _store_in_tmp(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every engine a test builds persists, as by default, but to a SQLite file of its own
    (the default file is ./tokenwire.db, which tests must not share or leave behind)."""
    monkeypatch.setenv("TOKENWIRE_STORE__URL", f"sqlite+aiosqlite:///{tmp_path}/tokenwire.db")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of each backend, private to the test: every test using it
    runs on a SQLite file and on a real Postgres server."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "store.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    with fresh_database(server) as url:
        yield url


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A throwaway redis-server of this test's own (see ``tests/support/redis.py``)."""
    with redis_server() as server:
        yield server
