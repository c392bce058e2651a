"""Migrations: from empty, twice, both entry points; the models match the migrated schema."""

from __future__ import annotations

import asyncio
import os
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from tokenwire.store import Store, migrate_sync
from tokenwire.store.models import Base

TABLES = {
    "alembic_version",
    "conversations",
    "outbox",
    "route_records",
    "route_results",
    "turns",
}


async def _schema(url: str) -> tuple[set[str], list[str], list[object]]:
    """The tables, the Alembic version rows, and any difference between models and schema."""

    def inspect_schema(sync: Connection) -> tuple[set[str], list[object]]:
        diff = compare_metadata(MigrationContext.configure(sync), Base.metadata)
        return set(inspect(sync).get_table_names()), diff

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            tables, diff = await conn.run_sync(inspect_schema)
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            versions = [row[0] for row in rows]
    finally:
        await engine.dispose()
    return tables, versions, diff


async def test_migrate_sync_from_empty_twice(database_url: str) -> None:
    await asyncio.to_thread(migrate_sync, database_url)
    await asyncio.to_thread(migrate_sync, database_url)

    tables, versions, diff = await _schema(database_url)
    assert tables == TABLES
    assert versions == ["0002"]
    assert diff == []


async def test_store_migrate_from_empty_twice(database_url: str) -> None:
    store = Store(database_url)
    await store.open()
    await store.migrate()
    await store.aclose()
    # Opening again (a restart) migrates again: a no-op.
    await store.open()
    await store.aclose()

    tables, versions, diff = await _schema(database_url)
    assert tables == TABLES
    assert versions == ["0002"]
    assert diff == []


def test_an_unsupported_database_is_refused_at_once() -> None:
    import pytest

    from tokenwire.store import Store

    with pytest.raises(ValueError, match="unsupported database"):
        Store("mysql+aiomysql://localhost/db")


async def test_concurrent_migrations_of_one_database_wait_for_each_other(
    database_url: str,
) -> None:
    # Several processes starting at once (gateways, workers, a deploy step) on an empty
    # database: without the migration lock, two would both try to create the tables.
    env = {**os.environ, "TOKENWIRE_STORE__URL": database_url}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tokenwire.cli",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    async with asyncio.timeout(120):
        outputs = [await proc.communicate() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, [err for _, err in outputs]
    tables, versions, diff = await _schema(database_url)
    assert tables == TABLES
    assert versions == ["0002"]
    assert diff == []


async def test_upgrading_a_database_made_by_the_first_release(database_url: str) -> None:
    await asyncio.to_thread(migrate_sync, database_url, "0001")
    store = Store(database_url)
    await store.open()  # migrates 0001 -> head
    await store.aclose()
    tables, versions, diff = await _schema(database_url)
    assert tables == TABLES and versions == ["0002"] and diff == []
