"""Engine creation and the few statements whose SQL differs between SQLite and Postgres."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import Insert

from tokenwire.store.models import Base

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another writer's lock before failing."""


def _on_sqlite_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # SQLite leaves foreign keys off unless each connection asks for them.
    cursor.execute("PRAGMA foreign_keys=ON")
    # Write-ahead logging: readers never block the writer, and with synchronous=NORMAL a
    # commit is an append without an fsync (a killed process loses nothing; a power cut may
    # lose the last commits, never the file's integrity). The default rollback journal
    # fsyncs twice per commit, which caps a server at ~200 commits/s.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
"""The driver tokenwire talks to each database through (its own dependencies)."""

_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+asyncpg": "postgresql",
}
"""The URL schemes users write, by database: the plain ones get the async driver."""


def async_database_url(url: str) -> str:
    """``url`` with the async driver tokenwire uses: ``sqlite:///x.db`` becomes
    ``sqlite+aiosqlite:///x.db``, ``postgresql://`` and ``postgres://`` become
    ``postgresql+asyncpg://``. Raises ``ValueError`` (one line, without the URL's password)
    for any other database or driver."""
    scheme, sep, rest = url.partition("://")
    database = _SCHEMES.get(scheme.lower()) if sep else None
    if database is None:
        shown = scheme if sep else url.split("@")[-1][:60]
        raise ValueError(
            f"unsupported database URL scheme {shown!r}: use sqlite:///PATH or "
            "postgresql://user:password@host/db (drivers aiosqlite and asyncpg)"
        )
    return f"{_ASYNC_DRIVERS[database]}://{rest}"


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url`` (plain URLs accepted: :func:`async_database_url`); on
    SQLite with foreign keys on and a busy timeout."""
    url = async_database_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


def insert_many_ignoring_conflicts(conn: AsyncConnection, table: type[Base]) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` without values, for ``execute(stmt, rows)``."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(
        f"unsupported database {conn.dialect.name!r}: tokenwire stores to SQLite or Postgres"
    )


def insert_ignoring_conflicts(
    conn: AsyncConnection, table: type[Base], values: dict[str, Any]
) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the connection's dialect (rowcount 0 if skipped)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).values(values).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).values(values).on_conflict_do_nothing()
    raise ValueError(
        f"unsupported database {conn.dialect.name!r}: tokenwire stores to SQLite or Postgres"
    )
