"""The outbox of the system channel: payloads delivered to routes at least once.

One item per (stream, route): enqueueing it again is a no-op. A worker calls ``claim_due``,
delivers, then ``mark_delivered`` or ``mark_failed``. A claim is a lease: it pushes the item's
``available_at`` forward by ``lease_s``, so an item whose worker died is claimed again later,
and two workers never hold the same item at once (each claim is a conditional ``UPDATE``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenwire.store.engine import insert_ignoring_conflicts
from tokenwire.store.models import OutboxItem

DEFAULT_LEASE_S = 60.0


class OutboxMixin(ABC):
    """Outbox operations; the class using it provides ``engine``."""

    @property
    @abstractmethod
    def engine(self) -> AsyncEngine:
        """The open SQLAlchemy engine the operations run on."""

    async def enqueue(self, stream_id: str, route: str, payload: dict[str, Any]) -> int:
        """Queue ``payload`` for ``route``, due now; returns the item id (the existing one if
        this (stream, route) was already queued, whose payload is then left unchanged)."""
        now = datetime.now(UTC)
        values = {
            "stream_id": stream_id,
            "route": route,
            "payload": payload,
            "state": "pending",
            "attempts": 0,
            "available_at": now,
            "created_at": now,
        }
        async with self.engine.begin() as conn:
            await conn.execute(insert_ignoring_conflicts(conn, OutboxItem, values))
            item_id = await conn.scalar(
                select(OutboxItem.id).where(
                    OutboxItem.stream_id == stream_id, OutboxItem.route == route
                )
            )
        assert item_id is not None  # inserted or already there, in this transaction
        return item_id

    async def claim_due(
        self, limit: int, *, lease_s: float = DEFAULT_LEASE_S, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Claim up to ``limit`` pending items due at ``now`` (default: the current time).

        Returns ``{id, stream_id, route, payload, attempts}`` dicts, oldest due first;
        ``attempts`` counts this claim. Items another worker claimed meanwhile are left out.
        """
        now = now or datetime.now(UTC)
        async with self.engine.connect() as conn:
            candidates = list(
                await conn.execute(
                    select(
                        OutboxItem.id,
                        OutboxItem.stream_id,
                        OutboxItem.route,
                        OutboxItem.payload,
                        OutboxItem.attempts,
                    )
                    .where(OutboxItem.state == "pending", OutboxItem.available_at <= now)
                    .order_by(OutboxItem.available_at, OutboxItem.id)
                    .limit(limit)
                )
            )
        claimed: list[dict[str, Any]] = []
        lease_until = now + timedelta(seconds=lease_s)
        for row in candidates:
            # One short write transaction per item: on SQLite a read-then-write transaction
            # could not take the write lock once another writer committed.
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    update(OutboxItem)
                    .where(
                        OutboxItem.id == row.id,
                        OutboxItem.state == "pending",
                        OutboxItem.available_at <= now,
                    )
                    .values(available_at=lease_until, attempts=OutboxItem.attempts + 1)
                )
            if result.rowcount == 1:
                claimed.append(
                    {
                        "id": row.id,
                        "stream_id": row.stream_id,
                        "route": row.route,
                        "payload": row.payload,
                        "attempts": row.attempts + 1,
                    }
                )
        return claimed

    async def mark_delivered(self, item_id: int) -> bool:
        """Mark a pending item delivered; False if it was not pending (nothing changes)."""
        return await self._settle(item_id, state="delivered", delivered_at=datetime.now(UTC))

    async def mark_failed(self, item_id: int, error: str, retry_at: datetime | None) -> bool:
        """Record a failed delivery: due again at ``retry_at``, or ``dead`` when it is None.
        False if the item was not pending."""
        if retry_at is None:
            return await self._settle(item_id, state="dead", last_error=error)
        return await self._settle(item_id, available_at=retry_at, last_error=error)

    async def get_outbox_item(self, item_id: int) -> dict[str, Any] | None:
        """The item's row as a dict (timestamps as aware datetimes), or None."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(OutboxItem.__table__).where(OutboxItem.id == item_id))
            ).first()
        return None if row is None else dict(row._mapping)

    async def _settle(self, item_id: int, **values: Any) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(OutboxItem)
                .where(OutboxItem.id == item_id, OutboxItem.state == "pending")
                .values(**values)
            )
        return result.rowcount == 1
