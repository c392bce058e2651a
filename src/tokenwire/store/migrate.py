"""Running the store's Alembic migrations from code, no ``alembic.ini`` needed.

``script_location`` points inside the installed package, so migrations work from a wheel.
Upgrading an up-to-date database is a no-op, so callers may migrate on every start.

Several processes may start at once against one database (gateways, workers, a deploy step):
each migration takes a database-wide lock first, inside its transaction, so the others wait
and then find the schema already at head. Postgres: a transaction-level advisory lock. SQLite:
``BEGIN IMMEDIATE``, which takes the file's write lock up front (its default deferred begin
would let two processes both read "empty" and both try to create the tables).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenwire.store.engine import async_database_url

SCRIPT_LOCATION = Path(__file__).with_name("migrations")
"""The Alembic script directory shipped with the package."""

HEAD = "head"

MIGRATION_LOCK_KEY = 0x746F6B656E77  # "tokenw": the advisory lock id, any fixed bigint


def alembic_config(url: str = "") -> Config:
    """An Alembic config for the store's migrations (``url`` only matters without a connection)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # ConfigParser interpolates '%': a percent-encoded password would otherwise break it.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate_sync(url: str, revision: str = HEAD) -> None:
    """Upgrade the database at ``url`` (an async URL) to ``revision``.

    Blocking, and it runs its own event loop: call it from synchronous code (a CLI, a deploy
    step, ``asyncio.to_thread``), never from inside a running loop (use ``Store.migrate``).
    """
    command.upgrade(alembic_config(async_database_url(url)), revision)


async def migrate_connection(connection: AsyncConnection, revision: str = HEAD) -> None:
    """Upgrade through an open async connection, in the caller's loop; the caller commits."""

    def upgrade(sync_connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_connection
        command.upgrade(config, revision)

    await connection.run_sync(upgrade)


def lock_for_migration(connection: Connection) -> None:
    """Take the database-wide migration lock; held until the transaction ends."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    elif dialect == "sqlite":
        # Nothing has begun a transaction yet: pysqlite defers BEGIN to the first write.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
