"""The store's contract suite runs every test on SQLite and on a real Postgres server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.databases import PostgresServer, fresh_database, postgres_server, sqlite_url
from tokenwire.store import Store


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of each backend, private to the test."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "store.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    with fresh_database(server) as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """An open, migrated store on an empty database."""
    opened = Store(database_url)
    await opened.open()
    yield opened
    await opened.aclose()
