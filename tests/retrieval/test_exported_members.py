"""``tokenwire.retrieval.__all__`` is pinned: a change to the public API is deliberate."""

from __future__ import annotations

import tokenwire.retrieval


def test_all_is_sorted_and_every_name_exists() -> None:
    def isort_style(name: str) -> tuple[int, str]:  # constants, classes, then the rest
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    names = tokenwire.retrieval.__all__
    assert names == sorted(names, key=isort_style)
    assert names == [
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
    for name in names:
        assert hasattr(tokenwire.retrieval, name), name
