"""The store's contract suite runs every test on SQLite and on a real Postgres server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tokenwire.store import Store

# `database_url` (SQLite and Postgres) comes from tests/conftest.py.


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """An open, migrated store on an empty database."""
    opened = Store(database_url)
    await opened.open()
    yield opened
    await opened.aclose()
