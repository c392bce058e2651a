"""Alembic environment of the store.

Run through :func:`tokenwire.store.migrate` (or ``Store.migrate``): when the caller hands over a
connection in ``config.attributes["connection"]`` the migrations run on it (inside the caller's
event loop); otherwise one async engine is made from ``sqlalchemy.url`` and used once.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from tokenwire.store.migrate import lock_for_migration
from tokenwire.store.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    lock_for_migration(connection)  # concurrent starts wait here, then find the schema at head
    # Batch mode lets later revisions ALTER tables on SQLite (which rebuilds them).
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        asyncio.run(_run_with_own_engine(context.config.get_main_option("sqlalchemy.url") or ""))
