"""The async persistence store: conversations, turns and their terminal records, route results.

Callers may rely on:

- ``finish_turn`` writes a turn's terminal record at most once, enforced by the database (a
  conditional ``UPDATE ... WHERE finished_at IS NULL``): of any number of concurrent or retried
  writers, across processes, exactly one gets ``True``; the others change nothing.
- ``mark_interrupted`` (call it once at startup, before accepting turns) ends every turn a
  previous process left ``running`` as ``incomplete``/partial with reason ``interrupted``.
- Every dict returned is JSON-ready: timestamps are ISO 8601 strings in UTC (``+00:00``).

Lifecycle: ``Store(url)`` → ``await open()`` (connects, migrates) → calls → ``await aclose()``.
The outbox of the system channel lives on the same class (see :mod:`tokenwire.store.outbox`).
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenwire.store.engine import create_engine, insert_ignoring_conflicts
from tokenwire.store.migrate import migrate_connection
from tokenwire.store.models import Conversation, RouteResultRow, Turn
from tokenwire.store.outbox import OutboxMixin
from tokenwire.store.records import (
    TURN_COLUMNS,
    conversation_dict,
    decode_cursor,
    encode_cursor,
    iso,
    terminal_values,
    turn_dict,
    utc_now,
)

DEFAULT_URL = "sqlite+aiosqlite:///tokenwire.db"
"""A SQLite file in the working directory; use ``postgresql+asyncpg://...`` for Postgres."""

INTERRUPTED = "interrupted"
"""The reason ``mark_interrupted`` records (not a protocol ``Reason``: no event carried it)."""


class Store(OutboxMixin):
    """Persistence over one SQLAlchemy async engine (SQLite by default, or Postgres)."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        """Raises ``ValueError`` for a database other than SQLite or Postgres."""
        if not url.startswith(("sqlite", "postgresql")):
            raise ValueError(
                f"unsupported database URL {url!r}: use sqlite+aiosqlite:// or "
                "postgresql+asyncpg://"
            )
        self.url = url
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The open engine; raises ``RuntimeError`` before ``open()`` or after ``aclose()``."""
        if self._engine is None:
            raise RuntimeError("Store is not open: await store.open() first")
        return self._engine

    async def open(self) -> None:
        """Connect and migrate the schema to the latest revision (a no-op when up to date)."""
        if self._engine is None:
            self._engine = create_engine(self.url)
        await self.migrate()

    async def migrate(self) -> None:
        """Run the Alembic migrations in this loop, on one of the engine's connections."""
        async with self.engine.begin() as connection:
            await migrate_connection(connection)

    async def aclose(self) -> None:
        """Close every connection. The store may be opened again."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    # Conversations

    async def create_conversation(self, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create a conversation with an unguessable id (128 random bits); returns it."""
        conversation_id, created_at, meta = secrets.token_hex(16), utc_now(), metadata or {}
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(Conversation).values(id=conversation_id, created_at=created_at, meta=meta)
            )
        return {"id": conversation_id, "created_at": iso(created_at), "metadata": meta}

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """The conversation with ``turns`` (oldest first, terminal records included), or None."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        Conversation.id,
                        Conversation.created_at,
                        Conversation.meta.label("metadata"),
                    ).where(Conversation.id == conversation_id)
                )
            ).first()
            if row is None:
                return None
            turns = await conn.execute(
                select(*TURN_COLUMNS)
                .where(Turn.conversation_id == conversation_id)
                .order_by(Turn.started_at, Turn.stream_id)
            )
            return {**conversation_dict(row), "turns": [turn_dict(t) for t in turns]}

    async def list_conversations(
        self, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of conversations, newest first, and the cursor of the next page (None at end).

        Keyset paging on (created_at, id): a conversation created while paging never makes a
        page repeat or skip an older one. A malformed cursor raises ``ValueError``.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        query = select(
            Conversation.id, Conversation.created_at, Conversation.meta.label("metadata")
        )
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    Conversation.created_at < created_at,
                    and_(Conversation.created_at == created_at, Conversation.id < last_id),
                )
            )
        query = query.order_by(Conversation.created_at.desc(), Conversation.id.desc())
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(query.limit(limit + 1)))
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(page[-1].created_at, page[-1].id)
        return [conversation_dict(r) for r in page], next_cursor

    # Turns

    async def start_turn(
        self,
        stream_id: str,
        conversation_id: str | None,
        request: dict[str, Any],
        route: str,
        model: str | None,
    ) -> bool:
        """Record a ``running`` turn. False (and nothing changes) if the stream id exists."""
        values = {
            "stream_id": stream_id,
            "conversation_id": conversation_id,
            "state": "running",
            "request": request,
            "route": route,
            "model": model,
            "started_at": utc_now(),
        }
        async with self.engine.begin() as conn:
            result = await conn.execute(insert_ignoring_conflicts(conn, Turn, values))
        return result.rowcount == 1

    async def finish_turn(self, stream_id: str, terminal: dict[str, Any]) -> bool:
        """Write the terminal record (the JSON form of ``done`` or ``error``) exactly once.

        True for the one call that wrote it; False when the turn is already finished (or was
        never started), in which case nothing changed. ``ValueError`` for a non-terminal event.
        """
        values = terminal_values(terminal)
        values.update(
            state="finished",
            finished_at=utc_now(),
            terminal_type=terminal["type"],
            terminal=terminal,
        )
        statement = (
            update(Turn)
            .where(Turn.stream_id == stream_id, Turn.finished_at.is_(None))
            .values(values)
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
        return result.rowcount == 1

    async def mark_interrupted(self) -> int:
        """End every unfinished turn as ``incomplete``, partial, reason ``interrupted``.

        For startup, before new turns begin: a running turn of *this* process would be ended
        too. Returns how many turns it marked.
        """
        statement = (
            update(Turn)
            .where(Turn.finished_at.is_(None))
            .values(
                state="finished",
                finished_at=utc_now(),
                status="incomplete",
                partial=True,
                reason=INTERRUPTED,
            )
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
        return result.rowcount

    async def get_turn(self, stream_id: str) -> dict[str, Any] | None:
        """The turn's row as a dict plus ``route_results`` (by route name), or None."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(*TURN_COLUMNS).where(Turn.stream_id == stream_id))
            ).first()
            if row is None:
                return None
            results = await conn.execute(
                select(RouteResultRow.result)
                .where(RouteResultRow.stream_id == stream_id)
                .order_by(RouteResultRow.route)
            )
            return {**turn_dict(row), "route_results": [r.result for r in results]}

    async def record_route_results(self, stream_id: str, results: list[dict[str, Any]]) -> None:
        """Store the router's results (``RouteResult.to_dict()``) for a turn.

        A result for a route already recorded replaces the old one. The turn must exist.
        """
        routes = [r["route"] for r in results]
        recorded_at = utc_now()
        rows = [
            {
                "stream_id": stream_id,
                "route": r["route"],
                "ok": bool(r.get("ok")),
                "result": r,
                "recorded_at": recorded_at,
            }
            for r in results
        ]
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(RouteResultRow).where(
                    RouteResultRow.stream_id == stream_id, RouteResultRow.route.in_(routes)
                )
            )
            if rows:
                await conn.execute(insert(RouteResultRow), rows)
