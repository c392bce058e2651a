"""The async persistence store: conversations, turns and their terminal records, route results.

Callers may rely on:

- ``finish_turn`` writes a turn's terminal record at most once, enforced by the database (a
  conditional ``UPDATE ... WHERE finished_at IS NULL``): of any number of concurrent or retried
  writers, across processes, exactly one gets ``True``; the others change nothing.
- ``mark_interrupted`` (call it once at startup, before accepting turns) ends every turn a
  previous process left ``running`` as ``incomplete``/partial with reason ``interrupted``.
- Tenancy: conversations and turns carry the tenant (API key owner) that made them, and every
  read takes a ``tenant``; a row of another tenant is reported exactly as a missing one
  (``None``). ``tenant=None`` is the single tenant of a server without auth.
- Every dict returned is JSON-ready: timestamps are ISO 8601 strings in UTC (``+00:00``).

Lifecycle: ``Store(url)`` → ``await open()`` (connects, migrates) → calls → ``await aclose()``.
The outbox of the system channel lives on the same class (see :mod:`tokenwire.store.outbox`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute

from tokenwire.store.engine import (
    async_database_url,
    create_engine,
    insert_ignoring_conflicts,
    insert_many_ignoring_conflicts,
)
from tokenwire.store.migrate import migrate_connection
from tokenwire.store.models import Conversation, OutboxItem, RouteRecord, RouteResultRow, Turn
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
        """Raises ``ValueError`` for a database other than SQLite or Postgres (plain
        ``sqlite://`` and ``postgresql://`` URLs get the async drivers)."""
        self.url = async_database_url(url)
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

    async def create_conversation(
        self, metadata: dict[str, Any] | None = None, *, tenant: str | None = None
    ) -> dict[str, Any]:
        """Create a conversation with an unguessable id (128 random bits); returns it."""
        conversation_id, created_at, meta = "cv_" + secrets.token_hex(16), utc_now(), metadata or {}
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(Conversation).values(
                    id=conversation_id, created_at=created_at, meta=meta, tenant=tenant
                )
            )
        return {"id": conversation_id, "created_at": iso(created_at), "metadata": meta}

    async def get_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> dict[str, Any] | None:
        """The conversation with ``turns`` (oldest first, terminal records included), or None
        (also when it belongs to another tenant)."""
        async with self.engine.connect() as conn:
            if not await self._owns_conversation(conn, conversation_id, tenant):
                return None
            row = (
                await conn.execute(
                    select(
                        Conversation.id,
                        Conversation.created_at,
                        Conversation.meta.label("metadata"),
                    ).where(Conversation.id == conversation_id)
                )
            ).first()
            assert row is not None
            turns = await conn.execute(
                select(*TURN_COLUMNS)
                .where(Turn.conversation_id == conversation_id)
                .order_by(Turn.started_at, Turn.stream_id)
            )
            return {**conversation_dict(row), "turns": [turn_dict(t) for t in turns]}

    async def conversation_exists(self, conversation_id: str, *, tenant: str | None) -> bool:
        """True when the conversation exists and belongs to ``tenant``."""
        async with self.engine.connect() as conn:
            return await self._owns_conversation(conn, conversation_id, tenant)

    async def conversation_context(
        self, conversation_id: str, *, tenant: str | None, max_turns: int = 200
    ) -> dict[str, Any] | None:
        """What a new turn of the conversation needs, or None (missing, or another tenant's):
        ``turns`` (the newest ``max_turns`` finished turns with an answer, oldest first:
        ``stream_id``, ``request``, ``answer``) and ``summary`` / ``summary_covers``."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(Conversation.summary, Conversation.summary_covers).where(
                        Conversation.id == conversation_id, _owned(Conversation.tenant, tenant)
                    )
                )
            ).first()
            if row is None:
                return None
            turns = await conn.execute(
                select(Turn.stream_id, Turn.request, Turn.answer)
                .where(
                    Turn.conversation_id == conversation_id,
                    Turn.finished_at.is_not(None),
                    Turn.answer.is_not(None),
                    Turn.answer != "",
                )
                .order_by(Turn.started_at.desc(), Turn.stream_id.desc())
                .limit(max_turns)
            )
            return {
                "turns": [
                    {"stream_id": t.stream_id, "request": t.request, "answer": t.answer}
                    for t in reversed(list(turns))
                ],
                "summary": row.summary,
                "summary_covers": list(row.summary_covers or []),
            }

    async def set_summary(self, conversation_id: str, summary: str, covers: list[str]) -> None:
        """Store the summary of the conversation's oldest turns (``covers``: their ids)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(summary=summary, summary_covers=covers)
            )

    async def _owns_conversation(
        self, conn: AsyncConnection, conversation_id: str, tenant: str | None
    ) -> bool:
        found = await conn.scalar(
            select(Conversation.id).where(
                Conversation.id == conversation_id, _owned(Conversation.tenant, tenant)
            )
        )
        return found is not None

    async def list_conversations(
        self, limit: int = 50, cursor: str | None = None, *, tenant: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of conversations, newest first, and the cursor of the next page (None at end).

        Keyset paging on (created_at, id): a conversation created while paging never makes a
        page repeat or skip an older one. A malformed cursor raises ``ValueError``.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        query = select(
            Conversation.id, Conversation.created_at, Conversation.meta.label("metadata")
        ).where(_owned(Conversation.tenant, tenant))
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
        *,
        tenant: str | None = None,
    ) -> bool:
        """Record a ``running`` turn. False (and nothing changes) if the stream id exists."""
        values = _running_turn(stream_id, conversation_id, request, route, model, tenant)
        async with self.engine.begin() as conn:
            result = await conn.execute(insert_ignoring_conflicts(conn, Turn, values))
        return result.rowcount == 1

    async def finish_turn(
        self,
        stream_id: str,
        terminal: dict[str, Any],
        *,
        started: dict[str, Any] | None = None,
        deliveries: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> bool:
        """Write the terminal record (the JSON form of ``done`` or ``error``) exactly once.

        True for the one call that wrote it; False when the turn is already finished (or was
        never started), in which case nothing changed. ``ValueError`` for a non-terminal event.

        ``started``: the :meth:`start_turn` arguments, to insert the running row first if it is
        missing (its own insert may have failed or still be on its way). ``deliveries``:
        ``(route, payload)`` pairs queued in the outbox in the same transaction, so a record
        that is written always has its deliveries, and a crash between the two is impossible.
        """
        finish = TurnFinish(stream_id, terminal, started, tuple(deliveries))
        async with self.engine.begin() as conn:
            return await _finish(conn, finish, utc_now())

    async def write_batch(
        self, starts: Sequence[TurnStart], finishes: Sequence[TurnFinish]
    ) -> None:
        """Many turns' writes in one transaction (a group commit: one commit for all), each
        statement executed once for all rows. Starts insert running rows (an existing row is
        left alone); finishes write terminal records with the same exactly-once condition as
        :meth:`finish_turn` (a record already written stays as it is) and queue their
        deliveries (one per stream and route, so a repeated batch queues nothing twice).
        All or nothing: on an exception nothing was written."""
        now = utc_now()
        running = [_running_turn(s.stream_id, **s.started) for s in starts]
        running += [_running_turn(f.stream_id, **f.started) for f in finishes if f.started]
        records = [_terminal_row(f, now) for f in finishes]
        outbox = [
            _outbox_row(f.stream_id, route, payload, now)
            for f in finishes
            for route, payload in f.deliveries
        ]
        async with self.engine.begin() as conn:
            if running:
                await conn.execute(insert_many_ignoring_conflicts(conn, Turn), running)
            if records:
                await conn.execute(_FINISH_MANY, records)
            if outbox:
                await conn.execute(insert_many_ignoring_conflicts(conn, OutboxItem), outbox)

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

    async def get_turn(self, stream_id: str, *, tenant: str | None = None) -> dict[str, Any] | None:
        """The turn's row as a dict plus ``route_results`` (by route name), or None (also when
        it belongs to another tenant)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*TURN_COLUMNS).where(
                        Turn.stream_id == stream_id, _owned(Turn.tenant, tenant)
                    )
                )
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

    async def write_route_record(self, stream_id: str, route: str, record: dict[str, Any]) -> bool:
        """The ``sql`` sink's write: the record for (stream, route), once. False when it was
        already there (a redelivery), which changes nothing."""
        values = {
            "stream_id": stream_id,
            "route": route,
            "conversation_id": record.get("conversation_id"),
            "record": record,
            "created_at": utc_now(),
        }
        async with self.engine.begin() as conn:
            result = await conn.execute(insert_ignoring_conflicts(conn, RouteRecord, values))
        return result.rowcount == 1

    async def route_records(self, stream_id: str) -> list[dict[str, Any]]:
        """What the ``sql`` sink wrote for a turn, one per route."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(RouteRecord.route, RouteRecord.record)
                .where(RouteRecord.stream_id == stream_id)
                .order_by(RouteRecord.route)
            )
            return [{"route": r.route, "record": r.record} for r in rows]


@dataclass(frozen=True, slots=True)
class TurnStart:
    """A running row to insert: ``started`` holds the :meth:`Store.start_turn` arguments."""

    stream_id: str
    started: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TurnFinish:
    """A terminal record to write (see :meth:`Store.finish_turn`)."""

    stream_id: str
    terminal: dict[str, Any]
    started: dict[str, Any] | None = None
    deliveries: tuple[tuple[str, dict[str, Any]], ...] = ()


_TERMINAL_COLUMNS = (
    "answer",
    "status",
    "partial",
    "reason",
    "usage",
    "timings",
    "structured",
    "sources",
    "error_code",
    "error_message",
    "terminal_type",
    "terminal",
    "finished_at",
)

# One statement for every finish of a batch (executemany); ``model`` and ``route`` keep the
# running row's values unless the terminal event names the ones that actually answered.
_FINISH_MANY = (
    update(Turn)
    .where(Turn.stream_id == bindparam("b_stream_id"), Turn.finished_at.is_(None))
    .values(
        state="finished",
        model=func.coalesce(bindparam("b_model", type_=String), Turn.model),
        route=func.coalesce(bindparam("b_route", type_=String), Turn.route),
        **{
            column: bindparam(f"b_{column}", type_=Turn.__table__.c[column].type)
            for column in _TERMINAL_COLUMNS
        },
    )
)


def _terminal_row(finish: TurnFinish, finished_at: datetime) -> dict[str, Any]:
    values = terminal_values(finish.terminal)
    values.update(
        terminal_type=finish.terminal["type"], terminal=finish.terminal, finished_at=finished_at
    )
    row = {f"b_{column}": values.get(column) for column in _TERMINAL_COLUMNS}
    row.update(
        b_stream_id=finish.stream_id, b_model=values.get("model"), b_route=values.get("route")
    )
    return row


def _outbox_row(
    stream_id: str, route: str, payload: dict[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "stream_id": stream_id,
        "route": route,
        "payload": payload,
        "state": "pending",
        "attempts": 0,
        "available_at": now,
        "created_at": now,
        "last_error": None,
        "delivered_at": None,
    }


async def _finish(conn: AsyncConnection, finish: TurnFinish, finished_at: datetime) -> bool:
    values = terminal_values(finish.terminal)
    values.update(
        state="finished",
        finished_at=finished_at,
        terminal_type=finish.terminal["type"],
        terminal=finish.terminal,
    )
    if finish.started is not None:
        row = _running_turn(finish.stream_id, **finish.started)
        await conn.execute(insert_ignoring_conflicts(conn, Turn, row))
    result = await conn.execute(
        update(Turn)
        .where(Turn.stream_id == finish.stream_id, Turn.finished_at.is_(None))
        .values(values)
    )
    if result.rowcount != 1:
        return False
    for route, payload in finish.deliveries:
        row = _outbox_row(finish.stream_id, route, payload, finished_at)
        await conn.execute(insert_ignoring_conflicts(conn, OutboxItem, row))
    return True


def _owned(column: InstrumentedAttribute[str | None], tenant: str | None) -> ColumnElement[bool]:
    return column.is_(None) if tenant is None else column == tenant


def _running_turn(
    stream_id: str,
    conversation_id: str | None,
    request: dict[str, Any],
    route: str,
    model: str | None,
    tenant: str | None = None,
) -> dict[str, Any]:
    return {
        "stream_id": stream_id,
        "conversation_id": conversation_id,
        "tenant": tenant,
        "state": "running",
        "request": request,
        "route": route,
        "model": model,
        "started_at": utc_now(),
    }
