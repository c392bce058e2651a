"""Knowledge base fixtures: the fixture corpus (tests/fixtures/kb), and a knowledge base on an
empty database of each backend (a SQLite file, and a fresh database on a real Postgres)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tokenwire.retrieval import KnowledgeBase, open_knowledge_base

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "kb"
"""Five short documents: Markdown (two with sections, one with front matter), HTML, text."""

CORPUS_FILES = sorted(
    [
        "harbor-cafe.txt",
        "products/lumen-kettle-faq.markdown",
        "products/lumen-kettle.md",
        "products/orbit-bike-lock.md",
        "tidewater-ferry.html",
    ]
)

# `database_url` (SQLite and Postgres, a fresh database each) comes from tests/conftest.py.


@pytest.fixture
async def kb(database_url: str) -> AsyncIterator[KnowledgeBase]:
    """An empty knowledge base, on each backend."""
    opened = open_knowledge_base(database_url)
    yield opened
    await opened.aclose()


@pytest.fixture
async def loaded_kb(kb: KnowledgeBase) -> KnowledgeBase:
    """The knowledge base with the fixture corpus in it."""
    results = await kb.add_paths([CORPUS])
    assert [r.status for r in results] == ["added"] * len(CORPUS_FILES)
    return kb


@pytest.fixture
def corpus_copy(tmp_path: Path) -> Path:
    """A copy of the corpus the test may change."""
    copy = tmp_path / "kb"
    shutil.copytree(CORPUS, copy)
    return copy
