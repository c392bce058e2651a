"""Turn records in the store, on SQLite and on a real Postgres server: written once, before the
terminal event is published; a restart marks what a dead process left running ``interrupted``;
the system channel goes through the durable outbox; conversations give turns their history."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokenwire import Engine, RequestError
from tokenwire.bus import UnknownStream
from tokenwire.protocol import Done, Error
from tokenwire.store import INTERRUPTED, Store

from ..support.receiver import WebhookReceiver
from .conftest import scripted, scripted_settings


def settings_for(url: str, **overrides: Any) -> Any:
    overrides["store"] = {"url": url, **overrides.get("store", {})}
    return scripted_settings(**overrides)


async def test_the_record_is_written_before_the_terminal_event_is_seen(database_url: str) -> None:
    async with Engine(settings_for(database_url)) as engine:
        assert engine.store is not None
        handle = await engine.submit({"prompt": "hi", "script": {"tokens": ["Hel", "lo"]}})
        seen: list[Any] = []
        async for event in handle.events():
            if isinstance(event, Done):
                # The moment a reader sees `done`, the record is already there.
                seen.append(await engine.store.get_turn(handle.stream_id))
        [record] = seen
        assert record is not None
        assert record["state"] == "finished"
        assert record["answer"] == "Hello"
        assert record["status"] == "completed" and record["partial"] is False
        assert record["reason"] == "stop"
        assert record["route"] == "default" and record["model"] == "scripted"
        assert (
            record["request"]
            == {
                "prompt": "hi",
                "script": {"tokens": ["Hel", "lo"]},
                "on_disconnect": "cancel",
                "background": False,
            }
            or record["request"]["prompt"] == "hi"
        )
        assert record["terminal"]["seq"] == handle.terminal.seq  # type: ignore[union-attr]
        assert record["timings"]["total"] > 0


async def test_failed_and_cancelled_turns_are_recorded_honestly(database_url: str) -> None:
    async with Engine(settings_for(database_url)) as engine:
        assert engine.store is not None
        failed = await engine.submit(
            {"prompt": "x", "script": {"tokens": ["a"], "fault": {"kind": "fail", "at": 0}}}
        )
        assert isinstance(await failed.wait(), Error)
        hanging = await engine.submit(
            {"prompt": "x", "script": {"tokens": ["a", "b"], "fault": {"kind": "hang", "at": 1}}}
        )
        async for event in hanging.events():
            if event.type == "text.delta":
                hanging.cancel()
        record = await engine.store.get_turn(failed.stream_id)
        assert record is not None
        assert record["status"] == "failed" and record["terminal_type"] == "error"
        assert record["error_code"] == "upstream_error"
        record = await engine.store.get_turn(hanging.stream_id)
        assert record is not None
        assert record["status"] == "incomplete" and record["partial"] is True
        assert record["reason"] == "cancelled" and record["answer"] == "a"


async def test_a_restart_marks_turns_left_running_as_interrupted(database_url: str) -> None:
    # A previous process that died mid-turn left its row `running`.
    store = Store(database_url)
    await store.open()
    await store.start_turn("tw_dead", None, {"prompt": "x"}, "default", "scripted")
    await store.aclose()
    async with Engine(settings_for(database_url)) as engine:
        assert engine.store is not None
        record = await engine.store.get_turn("tw_dead")
        assert record is not None
        assert record["state"] == "finished" and record["reason"] == INTERRUPTED
        assert record["partial"] is True and record["status"] == "incomplete"
        status = await engine.status("tw_dead")
        assert status["state"] == "incomplete" and status["record"]["reason"] == INTERRUPTED
        assert b"tokenwire_turns_interrupted_total 1.0" in engine.metrics.render()


async def test_a_finished_turn_is_found_in_the_store_after_its_events_expire(
    database_url: str,
) -> None:
    async with Engine(settings_for(database_url, limits={"max_retained_streams": 0})) as engine:
        handle = await engine.submit({"prompt": "x", "script": {"tokens": ["a"]}})
        await handle.wait()
        with pytest.raises(UnknownStream):
            engine.handle(handle.stream_id)  # its events are gone from memory
        status = await engine.status(handle.stream_id)
        assert status["state"] == "completed" and status["terminal"]["answer"] == "a"


async def test_tenants_see_only_their_own_turns(database_url: str) -> None:
    async with Engine(settings_for(database_url)) as engine:
        handle = await engine.submit(
            {"prompt": "x", "script": {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}}},
            tenant="acme",
        )
        for other in ("globex", None):
            with pytest.raises(UnknownStream):
                engine.handle(handle.stream_id, tenant=other)
            with pytest.raises(UnknownStream):
                engine.cancel(handle.stream_id, tenant=other)
            with pytest.raises(UnknownStream):
                await engine.status(handle.stream_id, tenant=other)
            assert engine.active(tenant=other) == []
        assert [t.stream_id for t in engine.active(tenant="acme")] == [handle.stream_id]
        assert engine.cancel(handle.stream_id, tenant="acme") is True
        await handle.wait()
        assert engine.store is not None
        assert await engine.store.get_turn(handle.stream_id, tenant="globex") is None
        assert await engine.store.get_turn(handle.stream_id, tenant="acme") is not None


async def test_stream_ids_carry_128_random_bits(database_url: str) -> None:
    async with Engine(settings_for(database_url)) as engine:
        ids = set()
        for _ in range(20):
            handle = await engine.submit({"prompt": "x", "script": {"tokens": ["a"]}})
            await handle.wait()
            ids.add(handle.stream_id)
        assert len(ids) == 20
        for stream_id in ids:
            assert stream_id.startswith("tw_") and len(stream_id) == 3 + 32
            int(stream_id[3:], 16)


# -- the system channel through the outbox -------------------------------------------------


async def test_routes_deliver_from_the_outbox_and_retry_until_delivered(database_url: str) -> None:
    async with WebhookReceiver() as receiver:
        receiver.fail_first(2, status=503)  # the sink's own retries run out; the outbox retries
        settings = settings_for(
            database_url,
            router={
                "routes": {
                    "hook": {
                        "sink": {
                            "kind": "webhook",
                            "url": receiver.url,
                            "max_attempts": 1,
                            "backoff_initial_s": 0,
                        }
                    },
                    "audit": {"sink": {"kind": "sql"}},
                }
            },
            store={
                "outbox_backoff_initial_s": 0.01,
                "outbox_backoff_max_s": 0.02,
                "outbox_poll_s": 0.05,
            },
        )
        async with Engine(settings) as engine:
            assert engine.store is not None
            handle = await engine.submit({"prompt": "x", "script": {"tokens": ["a", "b"]}})
            await handle.wait()
            await receiver.wait_requests(3)  # two 503s, then the one that lands
            [delivered] = receiver.accepted[f"{handle.stream_id}:hook"]
            body = json.loads(delivered.body)
            assert body["stream_id"] == handle.stream_id and body["answer"] == "ab"
            await engine.routes_settled()
            await engine._outbox.drained()  # type: ignore[union-attr]
            records = await engine.store.route_records(handle.stream_id)
            assert [r["route"] for r in records] == ["audit"]
            assert records[0]["record"]["answer"] == "ab"
            stored = await engine.store.get_turn(handle.stream_id)
            assert stored is not None
            by_route = {r["route"]: r for r in stored["route_results"]}
            assert by_route["audit"]["ok"] is True and by_route["hook"]["ok"] is True
        assert len(receiver.requests) == 3  # delivered: never again


async def test_a_delivery_left_in_the_outbox_is_delivered_after_a_restart(
    database_url: str,
) -> None:
    store = Store(database_url)
    await store.open()
    await store.start_turn("tw_prev", None, {"prompt": "x"}, "default", "scripted")
    record = {"type": "done", "stream_id": "tw_prev", "answer": "earlier", "conversation_id": None}
    await store.finish_turn(
        "tw_prev",
        {
            "type": "done",
            "stream_id": "tw_prev",
            "seq": 4,
            "answer": "earlier",
            "status": "completed",
            "partial": False,
            "reason": "stop",
        },
        deliveries=[("audit", record)],
    )
    await store.aclose()
    settings = settings_for(database_url, router={"routes": {"audit": {"sink": {"kind": "sql"}}}})
    async with Engine(settings) as engine:
        assert engine.store is not None
        await engine._outbox.drained()  # type: ignore[union-attr]
        rows = await engine.store.route_records("tw_prev")
        assert [r["record"]["answer"] for r in rows] == ["earlier"]


# -- conversations ---------------------------------------------------------------------------


async def test_a_turn_of_an_unknown_or_foreign_conversation_is_404(database_url: str) -> None:
    async with Engine(settings_for(database_url)) as engine:
        assert engine.store is not None
        mine = await engine.store.create_conversation(tenant="acme")
        for conversation_id, tenant in (("cv_nope", "acme"), (mine["id"], "globex")):
            with pytest.raises(RequestError) as info:
                await engine.submit(
                    {
                        "prompt": "x",
                        "conversation_id": conversation_id,
                        "script": {"tokens": ["a"]},
                    },
                    tenant=tenant,
                )
            assert info.value.status == 404 and info.value.code == "conversation_not_found"


async def test_a_conversation_turn_gets_its_history(database_url: str) -> None:
    async with Engine(
        settings_for(
            database_url, routes={"default": {"providers": ["a"], "system_prompt": "Be brief."}}
        )
    ) as engine:
        assert engine.store is not None
        conversation = await engine.store.create_conversation()
        cid = conversation["id"]
        first = await engine.submit(
            {"prompt": "My name is Ada.", "conversation_id": cid, "script": {"tokens": ["Hi Ada"]}}
        )
        done = await first.wait()
        assert isinstance(done, Done) and done.context is not None
        assert done.context["history_turns"] == 0
        second = await engine.submit(
            {"prompt": "What is my name?", "conversation_id": cid, "script": {"tokens": ["Ada"]}}
        )
        done = await second.wait()
        sent = scripted(engine).requests[-1].messages
        assert [(m.role, m.content) for m in sent] == [
            ("system", "Be brief."),
            ("user", "My name is Ada."),
            ("assistant", "Hi Ada"),
            ("user", "What is my name?"),
        ]
        assert isinstance(done, Done) and done.context is not None
        assert done.context["kept_turns"] == 1 and done.context["dropped"] == []
        stored = await engine.store.get_conversation(cid)
        assert stored is not None
        assert [t["answer"] for t in stored["turns"]] == ["Hi Ada", "Ada"]


async def seed(store: Store, cid: str, n: int) -> None:
    for i in range(n):
        stream_id = f"tw_old{i:02d}"
        text = f"Earlier message {i}: " + "facts about the order and its delivery. " * 3
        await store.start_turn(stream_id, cid, {"prompt": text}, "default", "scripted")
        await store.finish_turn(
            stream_id,
            {
                "type": "done",
                "stream_id": stream_id,
                "seq": 5,
                "answer": "Answer " + text,
                "status": "completed",
                "partial": False,
                "reason": "stop",
            },
        )


async def test_history_that_does_not_fit_is_dropped_then_summarised(database_url: str) -> None:
    settings = settings_for(
        database_url,
        providers={"a": {"kind": "scripted", "context_window": 400}},
        routes={"default": {"providers": ["a"], "system_prompt": "Be brief."}},
        context={"summarize": "always"},
    )
    async with Engine(settings) as engine:
        store = engine.store
        assert store is not None
        cid = (await store.create_conversation())["id"]
        await seed(store, cid, 12)
        body = {
            "conversation_id": cid,
            "max_tokens": 64,
            "script": {"tokens": ["A short summary."]},
        }

        first = await (await engine.submit({"prompt": "Where is it?", **body})).wait()
        assert isinstance(first, Done) and first.context is not None
        dropped = first.context["dropped"]
        assert dropped and dropped[0] == "tw_old00" and first.context["summarized"] == []
        assert first.context["prompt_tokens"] <= first.context["budget"]
        sent = scripted(engine).requests[-1].messages
        assert sent[0].content == "Be brief." and sent[-1].content == "Where is it?"

        await engine.summaries_settled()
        stored = await store.conversation_context(cid, tenant=None)
        assert stored is not None and stored["summary"] == "A short summary."
        assert stored["summary_covers"] == dropped

        second = await (await engine.submit({"prompt": "And now?", **body})).wait()
        assert isinstance(second, Done) and second.context is not None
        assert second.context["summarized"] == dropped
        sent = scripted(engine).requests[-1].messages
        assert sent[0].content == "Be brief."  # never dropped, always first
        assert any(m.role == "system" and "A short summary." in m.content for m in sent)
        assert b'tokenwire_context_summaries_total{outcome="ok"} 1.0' in engine.metrics.render()


async def test_a_new_message_too_long_for_the_window_is_refused(database_url: str) -> None:
    settings = settings_for(
        database_url,
        providers={"a": {"kind": "scripted", "context_window": 256}},
        routes={"default": {"providers": ["a"]}},
    )
    async with Engine(settings) as engine:
        assert engine.store is not None
        cid = (await engine.store.create_conversation())["id"]
        with pytest.raises(RequestError) as info:
            await engine.submit({"prompt": "word " * 500, "conversation_id": cid})
        assert info.value.status == 400 and info.value.code == "context_too_long"
        assert scripted(engine).started == 0
