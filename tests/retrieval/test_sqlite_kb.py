# ruff: noqa: RUF001 - chunk titles join headings with U+203A, a look-alike of ">"
"""What is particular to the SQLite knowledge base: URLs, sharing the app's store file, and
tables of its own only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.retrieval.conftest import CORPUS
from tests.support.databases import sqlite_url
from tokenwire.retrieval import (
    PostgresKnowledgeBase,
    SQLiteKnowledgeBase,
    open_knowledge_base,
)
from tokenwire.retrieval.sqlite_kb import sqlite_path
from tokenwire.store import Store


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite+aiosqlite:///tokenwire.db", "tokenwire.db"),
        ("sqlite:///data/kb.db", "data/kb.db"),
        ("sqlite+aiosqlite:////var/lib/tw/kb.db", "/var/lib/tw/kb.db"),
        ("sqlite:////tmp/a%20b.db", "/tmp/a b.db"),
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:///kb.db?timeout=5", "kb.db"),
        ("/srv/kb.db", "/srv/kb.db"),
        ("kb.db", "kb.db"),
    ],
)
def test_sqlite_path(url: str, path: str) -> None:
    assert sqlite_path(url) == path


async def test_open_knowledge_base_chooses_by_url(tmp_path: Path) -> None:
    for url, path in [
        (sqlite_url(tmp_path / "a.db"), tmp_path / "a.db"),
        (f"sqlite:///{tmp_path}/b.db", tmp_path / "b.db"),
        (str(tmp_path / "c"), tmp_path / "c"),
    ]:
        async with open_knowledge_base(url) as kb:
            assert isinstance(kb, SQLiteKnowledgeBase)
            assert kb.path == str(path)
    for url in ("postgresql+asyncpg://u@127.0.0.1:5432/db", "postgresql://u@127.0.0.1/db"):
        async with open_knowledge_base(url) as kb:  # nothing connects until first used
            assert isinstance(kb, PostgresKnowledgeBase)
            assert kb.url == "postgresql+asyncpg://" + url.split("://", 1)[1]
    for bad in ("", "mysql://u@h/db", "redis://127.0.0.1"):
        with pytest.raises(ValueError):
            open_knowledge_base(bad)


async def test_in_memory(tmp_path: Path) -> None:
    async with open_knowledge_base("sqlite://") as kb:
        await kb.add_paths([CORPUS])
        assert (await kb.search("descale"))[0].title == "Lumen Kettle › Descaling"


async def test_it_shares_the_stores_file_and_touches_only_kb_tables(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "tokenwire.db")
    store = Store(url)
    await store.open()
    conversation = (await store.create_conversation(tenant=None))["id"]
    async with open_knowledge_base(url) as kb:
        await kb.add_paths([CORPUS])
        assert await store.conversation_exists(conversation, tenant=None)
        assert (await kb.search("ferry fares"))[0].title == "Tidewater Ferry Schedule › Fares"
    await store.aclose()

    # A restart: the store migrates again, the knowledge base is still there.
    store = Store(url)
    await store.open()
    async with open_knowledge_base(url) as kb:
        assert (await kb.stats())["documents"] == 5
    await store.aclose()

    with sqlite3.connect(tmp_path / "tokenwire.db") as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    ours = {name for name in names if name.startswith("kb_")}
    assert {"kb_documents", "kb_chunks", "kb_chunks_fts"} <= ours
    assert names - ours == {
        "alembic_version", "conversations", "outbox", "route_records", "route_results", "turns",
    }  # fmt: skip


async def test_two_instances_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "kb.db"
    async with SQLiteKnowledgeBase(path) as writer, SQLiteKnowledgeBase(path) as reader:
        await writer.add_paths([CORPUS])
        assert (await reader.search("descale"))[0].title == "Lumen Kettle › Descaling"
        assert (await reader.add_paths([CORPUS]))[0].status == "unchanged"


async def test_a_closed_knowledge_base_refuses_work(tmp_path: Path) -> None:
    kb = SQLiteKnowledgeBase(tmp_path / "kb.db")
    await kb.aclose()
    with pytest.raises(RuntimeError):
        await kb.search("kettle")


async def test_the_directory_of_a_new_file_is_created(tmp_path: Path) -> None:
    async with SQLiteKnowledgeBase(tmp_path / "deep" / "er" / "kb.db") as kb:
        assert await kb.search("kettle") == []
    assert (tmp_path / "deep" / "er" / "kb.db").exists()
