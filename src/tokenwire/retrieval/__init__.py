"""The built-in knowledge base: Markdown, HTML and text files, chunked by heading and searched
with BM25-style full-text ranking, in SQLite (FTS5) or Postgres (``tsvector``).

    async with open_knowledge_base("sqlite+aiosqlite:///tokenwire.db") as kb:
        await kb.add_paths([Path("docs")], base_url="https://docs.example.com/")
        passages = await kb.search("How often should I descale the kettle?")
"""

from __future__ import annotations

from .base import (
    DEFAULT_LIMIT,
    AddResult,
    AddStatus,
    DocumentInfo,
    KBStats,
    KnowledgeBase,
    Passage,
    Retriever,
)
from .chunking import (
    MAX_CHUNK_CHARS,
    SUFFIXES,
    Chunk,
    ChunkedDocument,
    DocumentKind,
    chunk_document,
    document_kind,
    slugify,
)
from .cli import add_kb_parser, run_kb
from .kb import open_knowledge_base
from .postgres_kb import PostgresKnowledgeBase
from .query import query_terms
from .sqlite_kb import SQLiteKnowledgeBase

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_CHUNK_CHARS",
    "SUFFIXES",
    "AddResult",
    "AddStatus",
    "Chunk",
    "ChunkedDocument",
    "DocumentInfo",
    "DocumentKind",
    "KBStats",
    "KnowledgeBase",
    "Passage",
    "PostgresKnowledgeBase",
    "Retriever",
    "SQLiteKnowledgeBase",
    "add_kb_parser",
    "chunk_document",
    "document_kind",
    "open_knowledge_base",
    "query_terms",
    "run_kb",
    "slugify",
]
