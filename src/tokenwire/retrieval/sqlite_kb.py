"""A knowledge base in a SQLite file, searched with FTS5 and ranked by BM25.

Its tables are all named ``kb_*`` and created when missing, so it can share the file of the
app's store without touching any other table. It uses the standard library's ``sqlite3`` on
one connection, each call run in a worker thread under a lock (a search is a millisecond on
a knowledge base of thousands of chunks). Writes take the file's write lock at once
(``BEGIN IMMEDIATE``) and wait up to 30 s for another writer, as the store does.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from .base import (
    DEFAULT_LIMIT,
    DOCUMENT_COLUMNS,
    DocumentInfo,
    KBStats,
    KnowledgeBase,
    Passage,
    PreparedDocument,
    document_of_row,
    passage_of_row,
    removal_keys,
)
from .query import fts5_match_expression, query_terms

T = TypeVar("T")

BUSY_TIMEOUT_S = 30.0

TITLE_WEIGHT = 4.0
TEXT_WEIGHT = 1.0

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS kb_documents (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL UNIQUE,
        url TEXT,
        title TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        chunks INTEGER NOT NULL,
        added_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS kb_chunks (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        document_id TEXT NOT NULL REFERENCES kb_documents (id) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL,
        title TEXT NOT NULL,
        url TEXT,
        text TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS kb_chunks_document ON kb_chunks (document_id, ordinal)",
    # External content: the index holds only the terms; the text lives in kb_chunks once.
    # Porter stemming on Unicode words, so "descaled" finds "descale"; accents folded.
    """
    CREATE VIRTUAL TABLE IF NOT EXISTS kb_chunks_fts USING fts5 (
        title, text,
        content = 'kb_chunks', content_rowid = 'pk',
        tokenize = 'porter unicode61 remove_diacritics 2'
    )
    """,
    """
    CREATE TRIGGER IF NOT EXISTS kb_chunks_fts_insert AFTER INSERT ON kb_chunks BEGIN
        INSERT INTO kb_chunks_fts (rowid, title, text) VALUES (new.pk, new.title, new.text);
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS kb_chunks_fts_delete AFTER DELETE ON kb_chunks BEGIN
        INSERT INTO kb_chunks_fts (kb_chunks_fts, rowid, title, text)
        VALUES ('delete', old.pk, old.title, old.text);
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS kb_chunks_fts_update AFTER UPDATE ON kb_chunks BEGIN
        INSERT INTO kb_chunks_fts (kb_chunks_fts, rowid, title, text)
        VALUES ('delete', old.pk, old.title, old.text);
        INSERT INTO kb_chunks_fts (rowid, title, text) VALUES (new.pk, new.title, new.text);
    END
    """,
)

_SEARCH = f"""
    SELECT c.id, c.document_id, c.title, c.url, c.text,
           -bm25(kb_chunks_fts, {TITLE_WEIGHT}, {TEXT_WEIGHT}) AS score
    FROM kb_chunks_fts JOIN kb_chunks AS c ON c.pk = kb_chunks_fts.rowid
    WHERE kb_chunks_fts MATCH ?
    ORDER BY bm25(kb_chunks_fts, {TITLE_WEIGHT}, {TEXT_WEIGHT}), c.pk
    LIMIT ?
"""


def sqlite_path(url: str) -> str:
    """The file of a SQLite URL (``sqlite:///relative.db``, ``sqlite+aiosqlite:////abs.db``;
    ``sqlite://`` or ``:memory:``: in memory) or of a plain path."""
    if not url.startswith("sqlite"):
        return url
    parts = urlsplit(url)
    if not parts.scheme.startswith("sqlite"):
        raise ValueError(f"not a SQLite URL: {url!r}")
    path = unquote(parts.path)
    # sqlite:///x.db -> path "/x.db" (relative x.db); sqlite:////abs.db -> "//abs.db".
    path = path[1:] if path.startswith("/") else path
    return path or ":memory:"


def _now() -> str:
    # Naive UTC, as the app's store keeps timestamps on SQLite (sorts as text as in time).
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


class SQLiteKnowledgeBase(KnowledgeBase):
    """A knowledge base in the SQLite file at ``path`` (created if missing)."""

    backend: Literal["sqlite", "postgres"] = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path) if str(path) == ":memory:" else str(Path(path).expanduser())
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> SQLiteKnowledgeBase:
        return cls(sqlite_path(url))

    # -- connection ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("the knowledge base is closed")
        if self._connection is not None:
            return self._connection
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA foreign_keys=ON")
            if self.path != ":memory:":
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in SCHEMA:
                    connection.execute(statement)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._connect())

        return await asyncio.to_thread(locked)

    @staticmethod
    def _transaction(connection: sqlite3.Connection, work: Callable[[], T]) -> T:
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work()
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                self._closed = True
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None

        await asyncio.to_thread(close)

    # -- search -------------------------------------------------------------------------------

    async def search(self, query: str, *, limit: int = DEFAULT_LIMIT) -> list[Passage]:
        terms = query_terms(query)
        if not terms or limit < 1:
            return []
        expression = fts5_match_expression(terms)

        def run(connection: sqlite3.Connection) -> list[Any]:
            return connection.execute(_SEARCH, (expression, limit)).fetchall()

        rows = await self._run(run)
        return [passage_of_row(row) for row in rows]

    # -- writes -------------------------------------------------------------------------------

    async def _store(self, document: PreparedDocument) -> Literal["added", "updated", "unchanged"]:
        def store(connection: sqlite3.Connection) -> Literal["added", "updated", "unchanged"]:
            def work() -> Literal["added", "updated", "unchanged"]:
                row = connection.execute(
                    "SELECT id, content_hash, url, added_at FROM kb_documents WHERE source = ?",
                    (document.source,),
                ).fetchone()
                if row is not None and row[1] == document.content_hash and row[2] == document.url:
                    return "unchanged"
                now = _now()
                added_at = now if row is None else row[3]
                if row is not None:
                    connection.execute("DELETE FROM kb_chunks WHERE document_id = ?", (row[0],))
                    connection.execute("DELETE FROM kb_documents WHERE id = ?", (row[0],))
                connection.execute(
                    "INSERT INTO kb_documents (id, source, url, title, content_hash, chunks,"
                    " added_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        document.document_id,
                        document.source,
                        document.url,
                        document.title,
                        document.content_hash,
                        len(document.chunks),
                        added_at,
                        now,
                    ),
                )
                connection.executemany(
                    "INSERT INTO kb_chunks (id, document_id, ordinal, title, url, text)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            document.chunk_id(chunk),
                            document.document_id,
                            chunk.ordinal,
                            chunk.title,
                            document.chunk_url(chunk),
                            chunk.text,
                        )
                        for chunk in document.chunks
                    ],
                )
                return "added" if row is None else "updated"

            return self._transaction(connection, work)

        return await self._run(store)

    async def remove(self, source: str | Path) -> bool:
        keys = removal_keys(source)
        marks = ", ".join("?" * len(keys))

        def remove(connection: sqlite3.Connection) -> bool:
            def work() -> bool:
                ids = [
                    row[0]
                    for row in connection.execute(
                        f"SELECT id FROM kb_documents WHERE source IN ({marks})"
                        f" OR id IN ({marks}) OR url IN ({marks}) ORDER BY source LIMIT 1",
                        (*keys, *keys, *keys),
                    )
                ]
                for document_id in ids:
                    connection.execute(
                        "DELETE FROM kb_chunks WHERE document_id = ?", (document_id,)
                    )
                    connection.execute("DELETE FROM kb_documents WHERE id = ?", (document_id,))
                return bool(ids)

            return self._transaction(connection, work)

        return await self._run(remove)

    # -- listing ------------------------------------------------------------------------------

    async def documents(self) -> list[DocumentInfo]:
        def run(connection: sqlite3.Connection) -> list[Any]:
            return connection.execute(
                f"SELECT {DOCUMENT_COLUMNS} FROM kb_documents ORDER BY source"
            ).fetchall()

        return [document_of_row(row, _parse_time) for row in await self._run(run)]

    async def stats(self) -> KBStats:
        def run(connection: sqlite3.Connection) -> tuple[int, int]:
            documents = connection.execute("SELECT count(*) FROM kb_documents").fetchone()[0]
            chunks = connection.execute("SELECT count(*) FROM kb_chunks").fetchone()[0]
            return int(documents), int(chunks)

        documents, chunks = await self._run(run)
        return KBStats(backend="sqlite", documents=documents, chunks=chunks)


__all__ = ["SQLiteKnowledgeBase", "sqlite_path"]
