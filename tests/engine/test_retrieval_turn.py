"""A route that retrieves: the knowledge base (the fixture corpus in SQLite FTS5 or Postgres) is
searched before generation, the passages go into the prompt, and they come back as the answer's
sources; citation markers the model wrote are gone from `done.answer` and from the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tokenwire import Done, Engine, Event
from tokenwire.protocol import Status
from tokenwire.retrieval import KnowledgeBase, open_knowledge_base

from .conftest import scripted, scripted_settings
from .test_turn import check_invariants

CORPUS = Path(__file__).parents[1] / "fixtures" / "kb"


@pytest.fixture
async def knowledge(database_url: str) -> AsyncIterator[tuple[str, KnowledgeBase]]:
    """The fixture corpus in the store's database: SQLite FTS5, or Postgres full-text search."""
    url = database_url
    kb = open_knowledge_base(url)
    await kb.add_paths([CORPUS], base_url="https://docs.example.com/")
    yield url, kb
    await kb.aclose()


def rag_settings(store_url: str, **route: Any) -> Any:
    return scripted_settings(
        routes={
            "default": {"providers": ["a"]},
            "docs": {"providers": ["a"], "retrieval": {"top_k": 3, **route}},
        },
        store={"url": store_url},
    )


async def run(engine: Engine, body: dict[str, Any]) -> tuple[Done, list[Event]]:
    handle = await engine.submit(body)
    events = [event async for event in handle.events()]
    done = check_invariants(events)
    assert isinstance(done, Done)
    return done, events


async def test_passages_go_into_the_prompt_and_back_as_sources_without_markers(
    knowledge: tuple[str, KnowledgeBase],
) -> None:
    url, _kb = knowledge
    tokens = ["Descale it every ", "4 weeks [1]", ". Claims ", "need a receipt[2][1]", "."]
    async with Engine(rag_settings(url)) as engine:
        done, events = await run(
            engine,
            {
                "prompt": "How often should I descale the Lumen kettle?",
                "route": "docs",
                "script": {"tokens": tokens},
            },
        )
        streamed = "".join(e.delta for e in events if e.type == "text.delta")  # type: ignore[union-attr]
        assert "[1]" in streamed  # the markers streamed as the model wrote them...
        assert done.answer == "Descale it every 4 weeks. Claims need a receipt."  # ...not here
        record = await engine.store.get_turn(done.stream_id)  # type: ignore[union-attr]
        assert record is not None and record["answer"] == done.answer
        assert "[1]" not in str(record["terminal"]["answer"])

        # The prompt held the numbered passages, the kettle's descaling section first.
        sent = scripted(engine).requests[-1]
        context = [m.content for m in sent.messages if m.role == "system"]
        assert context and context[0].splitlines()[1].startswith("[1] Lumen Kettle")
        assert "every 4 weeks with white vinegar" in context[0]

        # Sources: every passage in the prompt; the cited ones first, in citation order.
        assert done.sources[0] == "https://docs.example.com/products/lumen-kettle.md#descaling"
        assert all(s.startswith("https://docs.example.com/") for s in done.sources)
        assert len(done.sources) == len(set(done.sources)) <= 3
        detail = done.source_details[0]
        assert detail["origin"] == "retrieval" and detail["title"].startswith("Lumen Kettle")
        # [1] and [2] were cited: marked so; a passage in the prompt the answer did not cite
        # is still a source, unmarked.
        assert [d.get("cited", False) for d in done.source_details] == [True, True, False][
            : len(done.source_details)
        ]
        assert "white vinegar" in detail["snippet"]

        phases = [e.phase.value for e in events if isinstance(e, Status)]
        assert phases[:2] == ["queued", "retrieving"]
        assert {"precheck", "route", "retrieval", "first_token", "post_process", "persist"} <= (
            done.timings.keys()
        )


async def test_no_passage_no_context_and_markers_stay(knowledge: tuple[str, KnowledgeBase]) -> None:
    url, _kb = knowledge
    async with Engine(rag_settings(url)) as engine:
        done, _ = await run(
            engine,
            {
                "prompt": "zzzqqq xxyyzz",
                "route": "docs",
                "script": {"tokens": ["see a[1] and https://example.org/page."]},
            },
        )
    # Nothing was retrieved, so [1] is not a citation; the URL in the text is the last resort.
    assert done.answer == "see a[1] and https://example.org/page."
    assert done.sources == ["https://example.org/page"]
    assert done.source_details == [{"url": "https://example.org/page", "origin": "text"}]


async def test_a_broken_knowledge_base_costs_the_passages_not_the_turn(tmp_path: Path) -> None:
    class Broken:
        async def search(self, query: str, *, limit: int = 4) -> list[Any]:
            raise RuntimeError("index offline")

        async def aclose(self) -> None:
            pass

    settings = rag_settings(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    async with Engine(settings, retriever=Broken()) as engine:
        done, _ = await run(
            engine, {"prompt": "descale?", "route": "docs", "script": {"tokens": ["ok"]}}
        )
        assert done.status == "completed" and done.sources == []
        assert "retrieval" in done.timings
        assert 'tokenwire_retrievals_total{outcome="error"} 1.0' in engine.metrics.render().decode()


async def test_sources_listed_in_the_structured_data_are_sources_too(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "sources": {"type": "array"}},
        "required": ["answer", "sources"],
    }
    data = '{"answer": "yes", "sources": ["https://s.example/a", {"url": "https://s.example/b"}]}'
    settings = rag_settings(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    async with Engine(settings) as engine:
        done, _ = await run(
            engine,
            {
                "prompt": "Is it?",
                "extraction": {"schema": schema, "strategy": "sequential"},
                "script": {
                    "tokens": ["Yes, see https://text.example/c."],
                    "extraction": {"tokens": [data]},
                },
            },
        )
    assert done.structured is not None and done.structured["status"] == "ok"
    # The structured data names sources, so the URL in the text is not used as one.
    assert done.sources == ["https://s.example/a", "https://s.example/b"]
    assert {d["origin"] for d in done.source_details} == {"structured"}
