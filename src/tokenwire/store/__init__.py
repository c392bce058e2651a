"""Persistence: conversations, turns with their terminal record (written exactly once), route
results and the system channel's outbox, over SQLAlchemy 2 async (SQLite or Postgres), with
Alembic migrations shipped in the package."""

from tokenwire.store.migrate import migrate_sync
from tokenwire.store.outbox import DEFAULT_LEASE_S
from tokenwire.store.store import DEFAULT_URL, INTERRUPTED, Store, TurnFinish, TurnStart

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_URL",
    "INTERRUPTED",
    "Store",
    "TurnFinish",
    "TurnStart",
    "migrate_sync",
]
