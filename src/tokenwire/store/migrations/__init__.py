"""Alembic migrations of the store; run them with :func:`tokenwire.store.migrate_sync`."""
