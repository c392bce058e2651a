# ruff: noqa: RUF001 - chunk titles join headings with U+203A, a look-alike of ">"
"""The knowledge base contract, on SQLite (FTS5) and on a real Postgres (tsvector): every test
runs on both, each on an empty database of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.retrieval.conftest import CORPUS, CORPUS_FILES
from tokenwire.retrieval import KnowledgeBase, Passage, Retriever
from tokenwire.retrieval.base import document_id_of, source_of

QUESTIONS = [
    # (question, the file whose passage must rank first, its section's anchor)
    ("How often should I descale the Lumen kettle?", "products/lumen-kettle.md", "descaling"),
    ("What does the Lumen warranty cover?", "products/lumen-kettle.md", "warranty"),
    ("How long is the kettle's warranty?", "products/lumen-kettle.md", "warranty"),
    (
        "How do I reset the code of my Orbit bike lock?",
        "products/orbit-bike-lock.md",
        "resetting-the-combination-code",
    ),
    (
        "I forgot the code of my Orbit lock, what now?",
        "products/orbit-bike-lock.md",
        "forgotten-code",
    ),
    ("When is Harbor Café open on Saturdays?", "harbor-cafe.txt", None),
    ("Is the cafe open on sunday?", "harbor-cafe.txt", None),
    (
        "What time does the first ferry leave on weekdays?",
        "tidewater-ferry.html",
        "weekday-crossings",
    ),
    ("How much is a bicycle ticket for the ferry?", "tidewater-ferry.html", "fares"),
    (
        "Why is the LED blinking red?",
        "products/lumen-kettle-faq.markdown",
        "why-does-the-led-ring-blink-red",
    ),
]

HOSTILE_QUERIES = [
    'kettle AND "descale',
    '"unbalanced quote',
    "kettle*",
    "*",
    "NEAR(kettle descale, 2)",
    "title:kettle OR text:warranty",
    "-kettle",
    "^kettle",
    "kettle + warranty - lock",
    "'; DROP TABLE kb_chunks; --",
    "((( )))",
    "kettle & | ! <-> :*",
    "AND OR NOT NEAR",
    "😀 émoji ☕ кофе 咖啡",
    "x" * 5000,
    " ".join(f"term{i}" for i in range(500)),
]


def url_of(relative: str) -> str:
    return (CORPUS / relative).resolve().as_uri()


async def test_it_is_a_retriever(kb: KnowledgeBase) -> None:
    assert isinstance(kb, Retriever)


async def test_the_passage_that_answers_ranks_first(loaded_kb: KnowledgeBase) -> None:
    # One knowledge base for every question (a fresh Postgres database each would be slow);
    # every miss is reported, not only the first.
    misses = []
    for question, relative, anchor in QUESTIONS:
        passages = await loaded_kb.search(question)
        expected_url = url_of(relative) + (f"#{anchor}" if anchor else "")
        if not passages or passages[0].url != expected_url:
            misses.append((question, [(p.title, round(p.score, 3)) for p in passages]))
        else:
            assert passages[0].document_id == document_id_of(source_of(CORPUS / relative))
    assert misses == []


async def test_passages_carry_ids_titles_urls_and_descending_scores(
    loaded_kb: KnowledgeBase,
) -> None:
    passages = await loaded_kb.search("How often should I descale the Lumen kettle?", limit=10)
    best = passages[0]
    assert best == Passage(
        id=f"{best.document_id}#1",
        document_id=document_id_of(source_of(CORPUS / "products/lumen-kettle.md")),
        title="Lumen Kettle › Descaling",
        url=url_of("products/lumen-kettle.md") + "#descaling",
        text=(
            "The Lumen kettle should be descaled every 4 weeks with white vinegar.\n\n"
            "To descale it, fill the kettle halfway with equal parts white vinegar and water, "
            "boil once, leave it to soak for 30 minutes, then rinse it three times with clean "
            "water."
        ),
        score=best.score,
    )
    scores = [p.score for p in passages]
    assert all(score > 0 for score in scores)
    assert scores == sorted(scores, reverse=True)
    assert len({p.id for p in passages}) == len(passages)


async def test_limit(loaded_kb: KnowledgeBase) -> None:
    assert len(await loaded_kb.search("kettle")) == 4
    assert len(await loaded_kb.search("kettle", limit=1)) == 1
    assert len(await loaded_kb.search("kettle", limit=100)) == 5
    assert await loaded_kb.search("kettle", limit=0) == []


async def test_stemming_finds_other_forms_of_a_word(loaded_kb: KnowledgeBase) -> None:
    passages = await loaded_kb.search("descaling")
    assert passages[0].url == url_of("products/lumen-kettle.md") + "#descaling"
    passages = await loaded_kb.search("resets")
    assert passages[0].url == url_of("products/orbit-bike-lock.md") + (
        "#resetting-the-combination-code"
    )


async def test_no_query_is_ever_a_syntax_error(loaded_kb: KnowledgeBase) -> None:
    for query in HOSTILE_QUERIES:
        passages = await loaded_kb.search(query)  # raises on a syntax error
        if "kettle" in query.lower():
            assert passages and "Lumen" in passages[0].title, query


async def test_a_query_without_search_terms_finds_nothing(loaded_kb: KnowledgeBase) -> None:
    for query in ["", "   ", "?!", "what is the", "How do I ... it?", "«»", "\x00\n\t"]:
        assert await loaded_kb.search(query) == [], query


async def test_unknown_words_find_nothing(loaded_kb: KnowledgeBase) -> None:
    assert await loaded_kb.search("zeppelin quasar") == []


async def test_searching_an_empty_knowledge_base(kb: KnowledgeBase) -> None:
    assert await kb.search("kettle") == []
    assert await kb.documents() == []
    stats = await kb.stats()
    assert (stats["documents"], stats["chunks"]) == (0, 0)


async def test_concurrent_searches(loaded_kb: KnowledgeBase) -> None:
    questions = [q for q, _, _ in QUESTIONS] * 3
    results = await asyncio.gather(*(loaded_kb.search(q) for q in questions))
    assert all(results)


# -- adding ----------------------------------------------------------------------------------


async def test_adding_the_corpus_reports_each_file(kb: KnowledgeBase) -> None:
    results = await kb.add_paths([CORPUS])
    assert [Path(r.source) for r in results] == [(CORPUS / f).resolve() for f in CORPUS_FILES]
    assert [(r.status, r.chunks) for r in results] == [
        ("added", 1),
        ("added", 2),
        ("added", 3),
        ("added", 3),
        ("added", 4),
    ]
    assert [r.title for r in results] == [
        "Harbor Café opening hours",
        "Lumen Kettle FAQ",
        "Lumen Kettle",
        "Orbit Bike Lock",
        "Tidewater Ferry Schedule",
    ]
    assert all(r.document_id == document_id_of(r.source) for r in results)
    stats = await kb.stats()
    assert stats == {"backend": kb.backend, "documents": 5, "chunks": 13}

    documents = await kb.documents()
    assert [d["source"] for d in documents] == [r.source for r in results]
    assert [d["chunks"] for d in documents] == [r.chunks for r in results]
    assert documents[0]["url"] == url_of("harbor-cafe.txt")
    assert documents[0]["title"] == "Harbor Café opening hours"
    assert len(documents[0]["content_hash"]) == 64
    assert documents[0]["added_at"].tzinfo is not None
    assert documents[0]["added_at"] == documents[0]["updated_at"]


async def test_adding_again_unchanged_writes_nothing(loaded_kb: KnowledgeBase) -> None:
    before = await loaded_kb.documents()
    results = await loaded_kb.add_paths([CORPUS])
    assert [r.status for r in results] == ["unchanged"] * 5
    assert [r.chunks for r in results] == [1, 2, 3, 3, 4]
    assert await loaded_kb.documents() == before


async def test_a_changed_file_replaces_its_passages(kb: KnowledgeBase, corpus_copy: Path) -> None:
    kettle = corpus_copy / "products" / "lumen-kettle.md"
    assert (await kb.add_file(kettle)).status == "added"
    before = (await kb.documents())[0]
    assert (await kb.search("white vinegar"))[0].title == "Lumen Kettle › Descaling"

    kettle.write_text(
        "# Lumen Kettle\n\n## Descaling\n\n"
        "The Lumen kettle should be descaled every 6 weeks with citric acid.\n"
    )
    result = await kb.add_file(kettle)
    assert (result.status, result.chunks, result.title) == ("updated", 1, "Lumen Kettle")

    assert await kb.search("white vinegar") == []
    assert await kb.search("warranty") == []
    passages = await kb.search("How often should I descale the kettle?", limit=10)
    assert [p.text for p in passages] == [
        "The Lumen kettle should be descaled every 6 weeks with citric acid."
    ]
    assert passages[0].id == f"{result.document_id}#0"
    assert await kb.stats() == {"backend": kb.backend, "documents": 1, "chunks": 1}
    after = (await kb.documents())[0]
    assert after["added_at"] == before["added_at"]
    assert after["updated_at"] >= before["updated_at"]
    assert after["content_hash"] != before["content_hash"]


async def test_a_new_url_updates_an_unchanged_file(kb: KnowledgeBase) -> None:
    kettle = CORPUS / "products" / "lumen-kettle.md"
    await kb.add_file(kettle)
    result = await kb.add_file(kettle, url="https://docs.example.com/kettle")
    assert result.status == "updated"
    passages = await kb.search("descale")
    assert passages[0].url == "https://docs.example.com/kettle#descaling"
    assert (await kb.add_file(kettle, url="https://docs.example.com/kettle")).status == (
        "unchanged"
    )


async def test_base_url_gives_each_file_its_url(kb: KnowledgeBase) -> None:
    await kb.add_paths([CORPUS], base_url="https://docs.example.com/kb")
    urls = {d["title"]: d["url"] for d in await kb.documents()}
    assert urls["Lumen Kettle"] == "https://docs.example.com/kb/products/lumen-kettle.md"
    assert urls["Harbor Café opening hours"] == "https://docs.example.com/kb/harbor-cafe.txt"
    passages = await kb.search("first ferry on weekdays")
    assert passages[0].url == "https://docs.example.com/kb/tidewater-ferry.html#weekday-crossings"


async def test_base_url_for_a_file_given_itself(kb: KnowledgeBase, tmp_path: Path) -> None:
    page = tmp_path / "my notes.md"
    page.write_text("# Notes\n\nParking is behind the harbour office.\n")
    [result] = await kb.add_paths([page], base_url="https://example.com/docs/")
    assert result.status == "added"
    assert (await kb.documents())[0]["url"] == "https://example.com/docs/my%20notes.md"


async def test_unsupported_and_empty_files_are_skipped(kb: KnowledgeBase, tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "empty.md").write_text("# Title only\n")
    (tmp_path / ".hidden.md").write_text("# Hidden\n\nsecret\n")
    (tmp_path / "note.txt").write_text("Parking is behind the harbour office.")
    pdf = await kb.add_file(tmp_path / "report.pdf")
    assert (pdf.status, pdf.chunks, pdf.reason) == ("skipped", 0, "unsupported file type '.pdf'")
    # A directory walk only picks supported, non-hidden files.
    results = await kb.add_paths([tmp_path])
    assert [(Path(r.source).name, r.status, r.reason) for r in results] == [
        ("empty.md", "skipped", "no text"),
        ("note.txt", "added", None),
    ]
    assert await kb.stats() == {"backend": kb.backend, "documents": 1, "chunks": 1}


async def test_a_file_emptied_is_removed(kb: KnowledgeBase, tmp_path: Path) -> None:
    note = tmp_path / "note.md"
    note.write_text("# Note\n\nParking is behind the harbour office.\n")
    await kb.add_file(note)
    note.write_text("")
    result = await kb.add_file(note)
    assert (result.status, result.reason) == (
        "skipped",
        "no text (its previous version was removed)",
    )
    assert await kb.documents() == []
    assert await kb.search("parking") == []


async def test_missing_paths_raise_before_anything_is_added(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        await kb.add_paths([CORPUS, tmp_path / "nope"])
    assert await kb.documents() == []
    for missing in ("nope.md", "nope.pdf"):
        with pytest.raises(FileNotFoundError):
            await kb.add_file(tmp_path / missing)


async def test_concurrent_adds_of_the_same_files(kb: KnowledgeBase) -> None:
    batches = await asyncio.gather(*(kb.add_paths([CORPUS]) for _ in range(3)))
    statuses = sorted(r.status for batch in batches for r in batch)
    assert statuses.count("added") == 5
    assert await kb.stats() == {"backend": kb.backend, "documents": 5, "chunks": 13}


# -- removing --------------------------------------------------------------------------------


async def test_remove_by_path_id_or_url(
    loaded_kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    kettle = CORPUS / "products" / "lumen-kettle.md"
    assert await loaded_kb.remove(kettle)
    assert not await loaded_kb.remove(kettle)
    assert all("Lumen Kettle ›" not in p.title for p in await loaded_kb.search("warranty"))
    assert await loaded_kb.stats() == {"backend": loaded_kb.backend, "documents": 4, "chunks": 10}

    # A path relative to the working directory.
    monkeypatch.chdir(CORPUS / "products")
    assert await loaded_kb.remove("orbit-bike-lock.md")
    # The document id, or its URL.
    assert await loaded_kb.remove(document_id_of(source_of(CORPUS / "harbor-cafe.txt")))
    assert await loaded_kb.remove(url_of("tidewater-ferry.html"))
    assert not await loaded_kb.remove("no-such-document")
    assert [d["title"] for d in await loaded_kb.documents()] == ["Lumen Kettle FAQ"]
    assert await loaded_kb.search("ferry") == []
    assert await loaded_kb.stats() == {"backend": loaded_kb.backend, "documents": 1, "chunks": 2}
