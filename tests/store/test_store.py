"""The store's contract: conversations, turns written exactly once, interrupted turns."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from tokenwire.store import INTERRUPTED, Store


def done(answer: str = "hello", **fields: Any) -> dict[str, Any]:
    return {
        "type": "done",
        "stream_id": "",
        "seq": 9,
        "answer": answer,
        "status": "completed",
        "partial": False,
        "reason": "stop",
        "model": "gemma-3-270m",
        "route": "default",
        "attempts": 1,
        "usage": {"input_tokens": 3, "output_tokens": 5},
        "sources": ["doc-1"],
        "structured": {"status": "ok", "data": {"x": 1}},
        "timings": {"total": 12.5},
        **fields,
    }


async def test_create_and_get_conversation(store: Store) -> None:
    created = await store.create_conversation({"title": "hi"})

    assert created["id"].startswith("cv_") and len(created["id"]) == 3 + 32
    assert datetime.fromisoformat(created["created_at"]).utcoffset() is not None
    got = await store.get_conversation(created["id"])
    assert got == {**created, "turns": []}
    assert await store.get_conversation("missing") is None


async def test_conversation_lists_its_turns_in_order_with_final_records(store: Store) -> None:
    conversation = await store.create_conversation()
    for stream_id in ("t1", "t2", "t3"):
        assert await store.start_turn(stream_id, conversation["id"], {"m": stream_id}, "r", "m")
    assert await store.finish_turn("t1", done("first"))
    await store.start_turn("elsewhere", None, {}, "r", None)

    got = await store.get_conversation(conversation["id"])

    assert got is not None
    assert [t["stream_id"] for t in got["turns"]] == ["t1", "t2", "t3"]
    first, second, _ = got["turns"]
    assert first["answer"] == "first"
    assert first["state"] == "finished"
    assert first["request"] == {"m": "t1"}
    assert second["state"] == "running"
    assert second["finished_at"] is None


async def test_list_conversations_pages_newest_first_without_gaps(store: Store) -> None:
    created = [await store.create_conversation({"n": n}) for n in range(5)]
    expected = sorted(created, key=lambda c: (c["created_at"], c["id"]), reverse=True)

    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        page, cursor = await store.list_conversations(limit=2, cursor=cursor)
        pages.append(page)
        if cursor is None:
            break

    assert [len(p) for p in pages] == [2, 2, 1]
    assert [c for p in pages for c in p] == expected
    # A conversation created while paging does not shift the pages after the cursor.
    _, cursor = await store.list_conversations(limit=2)
    await store.create_conversation()
    page, _ = await store.list_conversations(limit=2, cursor=cursor)
    assert page == expected[2:4]


async def test_list_conversations_rejects_a_bad_cursor(store: Store) -> None:
    for cursor in ("not-a-cursor", "", "W10"):
        with pytest.raises(ValueError):
            await store.list_conversations(cursor=cursor)


async def test_start_turn_twice_is_refused(store: Store) -> None:
    assert await store.start_turn("s", None, {"a": 1}, "r", "m")
    assert not await store.start_turn("s", None, {"a": 2}, "r", "m")
    turn = await store.get_turn("s")
    assert turn is not None
    assert turn["request"] == {"a": 1}


async def test_finish_turn_writes_the_terminal_record(store: Store) -> None:
    await store.start_turn("s", None, {"messages": []}, "default", "first-model")

    assert await store.finish_turn("s", done(model="fallback-model"))

    turn = await store.get_turn("s")
    assert turn is not None
    assert turn["state"] == "finished"
    assert turn["terminal_type"] == "done"
    assert (turn["answer"], turn["status"], turn["partial"], turn["reason"]) == (
        "hello",
        "completed",
        False,
        "stop",
    )
    assert turn["model"] == "fallback-model"
    assert turn["usage"] == {"input_tokens": 3, "output_tokens": 5}
    assert turn["timings"] == {"total": 12.5}
    assert turn["structured"] == {"status": "ok", "data": {"x": 1}}
    assert turn["sources"] == ["doc-1"]
    assert turn["terminal"] == done(model="fallback-model")
    assert turn["finished_at"] >= turn["started_at"]


async def test_finish_turn_with_an_error(store: Store) -> None:
    await store.start_turn("s", None, {}, "default", "m")
    error = {"type": "error", "code": "upstream_error", "message": "boom", "retryable": True}

    assert await store.finish_turn("s", error)

    turn = await store.get_turn("s")
    assert turn is not None
    assert (turn["status"], turn["partial"], turn["error_code"], turn["error_message"]) == (
        "failed",
        False,
        "upstream_error",
        "boom",
    )


async def test_finish_turn_second_call_changes_nothing(store: Store) -> None:
    await store.start_turn("s", None, {}, "r", "m")
    assert await store.finish_turn("s", done("first"))
    before = await store.get_turn("s")

    assert not await store.finish_turn("s", done("second", status="incomplete", partial=True))

    assert await store.get_turn("s") == before
    assert not await store.finish_turn("never-started", done())
    with pytest.raises(ValueError):
        await store.finish_turn("s", {"type": "text.delta", "delta": "x"})


async def test_concurrent_finish_turn_has_exactly_one_winner(
    store: Store, database_url: str
) -> None:
    await store.start_turn("s", None, {}, "r", "m")
    # Two engines, as two server processes would have.
    other = Store(database_url)
    await other.open()
    try:
        writers = [other if n % 2 else store for n in range(20)]
        results = await asyncio.gather(
            *(w.finish_turn("s", done(f"answer-{n}")) for n, w in enumerate(writers))
        )
    finally:
        await other.aclose()

    assert results.count(True) == 1
    turn = await store.get_turn("s")
    assert turn is not None
    assert turn["answer"] == f"answer-{results.index(True)}"


async def test_mark_interrupted_ends_only_running_turns(store: Store) -> None:
    for stream_id in ("finished", "running-1", "running-2"):
        await store.start_turn(stream_id, None, {}, "r", "m")
    await store.finish_turn("finished", done())
    finished_before = await store.get_turn("finished")

    assert await store.mark_interrupted() == 2

    assert await store.get_turn("finished") == finished_before
    for stream_id in ("running-1", "running-2"):
        turn = await store.get_turn(stream_id)
        assert turn is not None
        assert (turn["state"], turn["status"], turn["partial"], turn["reason"]) == (
            "finished",
            "incomplete",
            True,
            INTERRUPTED,
        )
        assert turn["finished_at"] is not None
        # A late writer from the dead process cannot overwrite the interrupted record.
        assert not await store.finish_turn(stream_id, done())
    assert await store.mark_interrupted() == 0


async def test_route_results_are_recorded_and_replaced(store: Store) -> None:
    await store.start_turn("s", None, {}, "r", "m")
    first = {"route": "hook", "ok": False, "attempts": 1, "error": "boom", "outcome": "error"}
    sink = {"route": "sink", "ok": True, "attempts": 1, "error": None, "outcome": "ok"}
    await store.record_route_results("s", [first, sink])
    retried = {**first, "ok": True, "attempts": 2, "error": None, "outcome": "ok"}

    await store.record_route_results("s", [retried])

    turn = await store.get_turn("s")
    assert turn is not None
    assert turn["route_results"] == [retried, sink]
    assert await store.get_turn("missing") is None
