"""A knowledge base in Postgres, searched with its full-text search and ranked by
``ts_rank_cd`` per term, weighted by the term's rarity (BM25's inverse document frequency).

Tables ``kb_documents`` and ``kb_chunks`` (created when missing, under an advisory lock so
that processes starting together do not race); each chunk has a generated ``tsvector``
(``english`` configuration; title weighted ``A``, text ``B``) with a GIN index. A query is
any of the search terms, each made a ``plainto_tsquery`` from an array parameter: no input is
ever parsed as tsquery syntax.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenwire.store.engine import create_engine

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
from .query import query_terms

TEXT_SEARCH_CONFIG = "english"

_SCHEMA_LOCK = 0x6B625F736368656D  # "kb_schem": pg_advisory_xact_lock key of the DDL

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS kb_documents (
        id text PRIMARY KEY,
        source text NOT NULL UNIQUE,
        url text,
        title text NOT NULL,
        content_hash text NOT NULL,
        chunks integer NOT NULL,
        added_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS kb_chunks (
        id text PRIMARY KEY,
        document_id text NOT NULL REFERENCES kb_documents (id) ON DELETE CASCADE,
        ordinal integer NOT NULL,
        title text NOT NULL,
        url text,
        text text NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('{TEXT_SEARCH_CONFIG}', title), 'A')
            || setweight(to_tsvector('{TEXT_SEARCH_CONFIG}', text), 'B')
        ) STORED
    )
    """,
    "CREATE INDEX IF NOT EXISTS kb_chunks_document ON kb_chunks (document_id, ordinal)",
    "CREATE INDEX IF NOT EXISTS kb_chunks_tsv ON kb_chunks USING GIN (tsv)",
)


def postgres_url(url: str) -> str:
    """``url`` with the asyncpg driver SQLAlchemy needs (``postgresql://`` and
    ``postgres://`` are accepted too)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


RANK_WEIGHTS = "{0.1, 0.2, 0.25, 1.0}"
"""``ts_rank_cd`` weights of labels D, C, B (text), A (title): a title match counts 4 times a
text match, as in the SQLite knowledge base."""

SATURATION = 0.5
"""BM25's k1, in units of title matches: a term's weight in a passage is ``r / (r + k1)`` of
its rarity, where ``r`` is ``ts_rank_cd`` (1 per title match, 0.25 per text match)."""

# ts_rank_cd alone knows nothing of how rare a term is, and counts every repetition fully, so
# a question's common words ("code", "lock", repeated in every passage of a manual) outweigh
# the one word that tells passages apart ("forgot"). As in BM25, each term is ranked on its
# own, saturated, and weighted by its inverse document frequency; a passage's score is the
# sum over the terms it matches. Each term's plainto_tsquery comes from an array parameter,
# so nothing is ever parsed as tsquery syntax.
_SEARCH = f"""
    WITH terms AS (
        SELECT DISTINCT plainto_tsquery('{TEXT_SEARCH_CONFIG}', term) AS query
        FROM unnest(CAST(:terms AS text[])) AS term
    ),
    total AS (SELECT count(*)::float8 AS n FROM kb_chunks),
    weighted AS (
        SELECT terms.query, ln(1 + (total.n - f.df + 0.5) / (f.df + 0.5)) AS idf
        FROM terms
        CROSS JOIN total
        CROSS JOIN LATERAL (
            SELECT count(*)::float8 AS df FROM kb_chunks AS c WHERE c.tsv @@ terms.query
        ) AS f
        WHERE numnode(terms.query) > 0 AND f.df > 0
    ),
    scored AS (
        SELECT c.id, sum(w.idf * r.rank / (r.rank + {SATURATION})) AS score
        FROM weighted AS w
        JOIN kb_chunks AS c ON c.tsv @@ w.query
        -- OFFSET 0: computed once per row (inlined, the planner would evaluate it twice).
        CROSS JOIN LATERAL (
            SELECT ts_rank_cd('{RANK_WEIGHTS}', c.tsv, w.query) AS rank OFFSET 0
        ) AS r
        GROUP BY c.id
    )
    SELECT c.id, c.document_id, c.title, c.url, c.text, s.score
    FROM scored AS s JOIN kb_chunks AS c ON c.id = s.id
    ORDER BY s.score DESC, c.document_id, c.ordinal
    LIMIT :limit
"""


class PostgresKnowledgeBase(KnowledgeBase):
    """A knowledge base in the Postgres database at ``url`` (``postgresql+asyncpg://...``)."""

    backend: Literal["sqlite", "postgres"] = "postgres"

    def __init__(self, url: str, *, engine: AsyncEngine | None = None) -> None:
        self.url = postgres_url(url)
        self._engine = engine if engine is not None else create_engine(self.url)
        self._owns_engine = engine is None
        self._ready = False

    async def _connection(self) -> AsyncConnection:
        """A connection (to use in ``async with``), the tables created first if need be."""
        if not self._ready:
            async with self._engine.begin() as conn:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK}
                )
                for statement in SCHEMA:
                    await conn.execute(text(statement))
            self._ready = True
        return self._engine.connect()

    async def aclose(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()

    # -- search -------------------------------------------------------------------------------

    async def search(self, query: str, *, limit: int = DEFAULT_LIMIT) -> list[Passage]:
        terms = query_terms(query)
        if not terms or limit < 1:
            return []
        async with await self._connection() as conn:
            rows = (await conn.execute(text(_SEARCH), {"terms": terms, "limit": limit})).all()
        return [passage_of_row(row) for row in rows]

    # -- writes -------------------------------------------------------------------------------

    async def _after_bulk_change(self) -> None:
        # Fresh statistics for the planner (the per-term document frequencies would otherwise
        # scan every chunk until autovacuum, which may be off, gets to it), and the GIN
        # index's pending entries merged.
        async with await self._connection() as conn:
            await conn.execute(text("SELECT gin_clean_pending_list('kb_chunks_tsv'::regclass)"))
            await conn.execute(text("ANALYZE kb_chunks"))
            await conn.commit()

    async def _store(self, document: PreparedDocument) -> Literal["added", "updated", "unchanged"]:
        async with await self._connection() as conn, conn.begin():
            # One writer per document at a time: two adds of a new file cannot both insert it.
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:id, 0))"),
                {"id": document.document_id},
            )
            row = (
                await conn.execute(
                    text("SELECT id, content_hash, url FROM kb_documents WHERE source = :source"),
                    {"source": document.source},
                )
            ).first()
            if row is not None and row[1] == document.content_hash and row[2] == document.url:
                return "unchanged"
            now = datetime.now(UTC)
            await conn.execute(
                text("DELETE FROM kb_chunks WHERE document_id = :id"),
                {"id": document.document_id},
            )
            await conn.execute(
                text(
                    "INSERT INTO kb_documents (id, source, url, title, content_hash, chunks,"
                    " added_at, updated_at) VALUES (:id, :source, :url, :title, :content_hash,"
                    " :chunks, :now, :now) ON CONFLICT (id) DO UPDATE SET source ="
                    " excluded.source, url = excluded.url, title = excluded.title,"
                    " content_hash = excluded.content_hash, chunks = excluded.chunks,"
                    " updated_at = excluded.updated_at"
                ),
                {
                    "id": document.document_id,
                    "source": document.source,
                    "url": document.url,
                    "title": document.title,
                    "content_hash": document.content_hash,
                    "chunks": len(document.chunks),
                    "now": now,
                },
            )
            await conn.execute(
                text(
                    "INSERT INTO kb_chunks (id, document_id, ordinal, title, url, text)"
                    " VALUES (:id, :document_id, :ordinal, :title, :url, :text)"
                ),
                [
                    {
                        "id": document.chunk_id(chunk),
                        "document_id": document.document_id,
                        "ordinal": chunk.ordinal,
                        "title": chunk.title,
                        "url": document.chunk_url(chunk),
                        "text": chunk.text,
                    }
                    for chunk in document.chunks
                ],
            )
            return "added" if row is None else "updated"

    async def remove(self, source: str | Path) -> bool:
        keys = removal_keys(source)
        async with await self._connection() as conn, conn.begin():
            row = (
                await conn.execute(
                    text(
                        "SELECT id FROM kb_documents WHERE source = ANY(:keys) OR id = ANY(:keys)"
                        " OR url = ANY(:keys) ORDER BY source LIMIT 1"
                    ),
                    {"keys": keys},
                )
            ).first()
            if row is None:
                return False
            await conn.execute(text("DELETE FROM kb_documents WHERE id = :id"), {"id": row[0]})
            return True

    # -- listing ------------------------------------------------------------------------------

    async def documents(self) -> list[DocumentInfo]:
        async with await self._connection() as conn:
            rows = (
                await conn.execute(
                    text(f"SELECT {DOCUMENT_COLUMNS} FROM kb_documents ORDER BY source")
                )
            ).all()
        return [document_of_row(row, lambda t: t.astimezone(UTC)) for row in rows]

    async def stats(self) -> KBStats:
        async with await self._connection() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT (SELECT count(*) FROM kb_documents),"
                        " (SELECT count(*) FROM kb_chunks)"
                    )
                )
            ).one()
        return KBStats(backend="postgres", documents=int(row[0]), chunks=int(row[1]))


__all__ = [
    "RANK_WEIGHTS",
    "SATURATION",
    "TEXT_SEARCH_CONFIG",
    "PostgresKnowledgeBase",
    "postgres_url",
]
