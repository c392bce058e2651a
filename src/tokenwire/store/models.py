"""The tables of the persistence store (SQLAlchemy 2 declarative).

The schema itself is owned by the Alembic revisions in ``migrations/versions``: these classes
describe the same tables for queries, and a test compares the two so they cannot drift.

Every timestamp is stored and returned as an aware UTC :class:`~datetime.datetime` (see
:class:`UTCDateTime`), on SQLite as on Postgres.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A ``timestamp with time zone`` that is always UTC on both sides.

    SQLite has no time zones: values are stored naive (in UTC) so that they compare as strings
    in the same order as in time, and come back with ``tzinfo=UTC`` attached.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The declarative base of every store table."""

    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Conversation(Base):
    """A conversation: an ordered series of turns."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    tenant: Mapped[str | None] = mapped_column(String(128))
    """The API key's tenant that owns it (None: auth is off)."""
    summary: Mapped[str | None] = mapped_column(Text)
    """A summary of the oldest turns, made in the background, used when they no longer fit."""
    summary_covers: Mapped[list[Any] | None] = mapped_column(JSON)
    """The stream ids of the turns ``summary`` stands for."""

    __table_args__ = (
        Index("ix_conversations_created_at_id", "created_at", "id"),
        Index("ix_conversations_tenant_created_at_id", "tenant", "created_at", "id"),
    )


class Turn(Base):
    """One turn; its terminal columns stay NULL until ``finished_at`` is set, exactly once."""

    __tablename__ = "turns"

    stream_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    tenant: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    """``running`` until the terminal record is written, then ``finished``."""
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    route: Mapped[str] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(256))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    terminal_type: Mapped[str | None] = mapped_column(String(16))
    """``done`` or ``error``; ``None`` for a turn marked interrupted at startup."""
    answer: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(32))
    partial: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(64))
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    structured: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sources: Mapped[list[Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    terminal: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The terminal event exactly as given to ``finish_turn`` (fields not in columns too)."""


class RouteResultRow(Base):
    """The outcome of one route of the system channel for one turn."""

    __tablename__ = "route_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("turns.stream_id", ondelete="CASCADE")
    )
    route: Mapped[str] = mapped_column(String(128))
    ok: Mapped[bool] = mapped_column(Boolean)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    recorded_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("stream_id", "route", name="uq_route_results_stream_route"),)


class OutboxItem(Base):
    """A payload to deliver to one route, at least once; one per (stream, route)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    """``pending`` (due at ``available_at``), ``delivered`` or ``dead`` (failed for good)."""
    attempts: Mapped[int] = mapped_column(Integer)
    available_at: Mapped[datetime]
    """When the item is next due; a claim moves it forward by the lease."""
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("stream_id", "route", name="uq_outbox_stream_route"),
        Index("ix_outbox_state_available_at", "state", "available_at"),
    )


class RouteRecord(Base):
    """A turn's system-channel record, as the built-in ``sql`` sink wrote it for one route."""

    __tablename__ = "route_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(128))
    conversation_id: Mapped[str | None] = mapped_column(String(64))
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("stream_id", "route", name="uq_route_records_stream_route"),)
