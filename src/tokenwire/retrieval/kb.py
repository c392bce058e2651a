"""Which knowledge base a URL names."""

from __future__ import annotations

from .base import KnowledgeBase
from .postgres_kb import PostgresKnowledgeBase
from .sqlite_kb import SQLiteKnowledgeBase


def open_knowledge_base(url: str) -> KnowledgeBase:
    """The knowledge base at ``url``: ``sqlite+aiosqlite:///PATH``, ``sqlite:///PATH`` or a
    plain filesystem path (SQLite; the file may be the app's store), or
    ``postgresql+asyncpg://...`` / ``postgresql://...`` (Postgres). Nothing is connected
    until first used; close it with ``aclose()`` (or ``async with``)."""
    if not url.strip():
        raise ValueError("no knowledge base URL: give a SQLite path or a Postgres URL")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme.startswith("sqlite"):
        return SQLiteKnowledgeBase.from_url(url)
    if scheme.startswith(("postgresql", "postgres")):
        return PostgresKnowledgeBase(url)
    if scheme:
        raise ValueError(
            f"unsupported knowledge base URL {url!r}: use a SQLite path or URL, or a Postgres URL"
        )
    return SQLiteKnowledgeBase(url)


__all__ = ["open_knowledge_base"]
