"""Retrieval-augmented answers from the real Gemma 3 270M: the knowledge base holds the fixture
corpus, a route retrieves before generating, and `done.sources` lists the fixture documents the
answer was given."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tokenwire import Done, Engine, Settings
from tokenwire.retrieval import open_knowledge_base

from ..support.model import HUNG_S, NO_DEADLINES

pytestmark = pytest.mark.model

CORPUS = Path(__file__).parents[1] / "fixtures" / "kb"


async def test_a_rag_turn_on_the_local_model_answers_with_the_fixture_documents(
    tmp_path: Path,
) -> None:
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    kb = open_knowledge_base(store_url)
    try:
        added = await kb.add_paths([CORPUS], base_url="https://docs.example.com/")
        assert all(result.status == "added" for result in added)
    finally:
        await kb.aclose()
    settings = Settings(
        routes={"default": {"providers": ["local"], "retrieval": {"top_k": 2}}},
        store={"url": store_url},
        deadlines=NO_DEADLINES,
    )
    async with Engine(settings) as engine, asyncio.timeout(HUNG_S):
        handle = await engine.submit(
            {"prompt": "How often should the Lumen kettle be descaled?", "max_tokens": 48}
        )
        done = await handle.wait()
        assert isinstance(done, Done)
        # A whole answer (max_tokens may end it: `length` is not partial), never a failure.
        assert not done.partial and done.answer
        kettle = "https://docs.example.com/products/lumen-kettle.md#descaling"
        assert done.sources[0] == kettle or kettle in done.sources
        assert all(s.startswith("https://docs.example.com/") for s in done.sources)
        assert {d["origin"] for d in done.source_details} == {"retrieval"}
        record = await engine.store.get_turn(handle.stream_id)  # type: ignore[union-attr]
        assert record is not None and record["sources"] == done.sources
