"""Resume and join over SSE and WebSocket, the disconnect policy, idempotent POSTs and
background turns."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import websockets

from tokenwire import Done, Reason, TextDelta
from tokenwire.protocol import Event, SSEDecoder, decode_event

from ..engine.test_turn import check_invariants
from .conftest import Live, live_server, read_sse, settings

SLOW = {"tokens": [f"t{i} " for i in range(30)], "delay_ms": 5}


async def events_until(response: Any, n_deltas: int, chunks: Any = None) -> list[Event]:
    decoder = SSEDecoder()
    events: list[Event] = []
    deltas = 0
    async for chunk in chunks if chunks is not None else response.aiter_bytes():
        for message in decoder.feed(chunk):
            event = decode_event(message.data)
            events.append(event)
            deltas += isinstance(event, TextDelta)
        if deltas >= n_deltas:
            return events
    return events


async def test_resume_after_a_drop_has_no_gap_and_no_duplicate() -> None:
    async with live_server(settings(coalesce={"window_ms": 0})) as live:
        body = {"prompt": "x", "on_disconnect": "continue", "script": SLOW}
        async with live.client.stream("POST", "/v1/streams", json=body) as response:
            stream_id = response.headers["x-tokenwire-stream-id"]
            first = await events_until(response, 3)
        # Dropped. Come back with the last id seen.
        last = first[-1].seq
        async with live.client.stream(
            "GET", f"/v1/streams/{stream_id}/events", headers={"Last-Event-ID": str(last)}
        ) as response:
            rest = await read_sse(response)
    done = check_invariants(first + rest)
    assert isinstance(done, Done) and done.reason is Reason.STOP
    assert done.answer == "".join(SLOW["tokens"]).strip()  # type: ignore[arg-type]


async def test_a_finished_stream_replays_from_any_point(live: Live) -> None:
    async with live.client.stream("POST", "/v1/streams", json={"prompt": "x"}) as response:
        stream_id = response.headers["x-tokenwire-stream-id"]
        original = await read_sse(response)
    async with live.client.stream("GET", f"/v1/streams/{stream_id}/events?after=2") as response:
        replay = await read_sse(response)
    assert replay == original[2:]


async def test_a_reconnect_at_the_terminal_id_is_204_so_eventsource_stops(live: Live) -> None:
    async with live.client.stream("POST", "/v1/streams", json={"prompt": "x"}) as response:
        stream_id = response.headers["x-tokenwire-stream-id"]
        original = await read_sse(response)
    terminal = str(original[-1].seq)
    for cursor in ({"headers": {"Last-Event-ID": terminal}}, {"params": {"after": terminal}}):
        again = await live.client.get(f"/v1/streams/{stream_id}/events", **cursor)  # type: ignore[arg-type]
        assert again.status_code == 204 and again.content == b""
    before = await live.client.get(
        f"/v1/streams/{stream_id}/events", headers={"Last-Event-ID": str(int(terminal) - 1)}
    )
    assert before.status_code == 200 and b"event: done" in before.content


async def test_every_sse_stream_starts_with_its_retry_field(live: Live) -> None:
    async with live.client.stream("POST", "/v1/streams", json={"prompt": "x"}) as response:
        body = await response.aread()
    assert body.startswith(b"retry: 2000\n\n")
    messages = SSEDecoder().feed(body)
    assert messages[0].retry == 2000 and messages[0].event == "start"


async def test_the_terminal_error_is_named_turn_error_over_sse(live: Live) -> None:
    script = {"tokens": ["a"], "fault": {"kind": "fail", "at": 0, "retryable": False}}
    async with live.client.stream(
        "POST", "/v1/streams", json={"prompt": "x", "script": script}
    ) as response:
        messages = SSEDecoder().feed(await response.aread())
    names = [m.event for m in messages]
    assert names[-1] == "turn.error" and "error" not in names
    assert orjson.loads(messages[-1].data)["type"] == "error"  # the JSON keeps its type


async def test_viewers_join_and_leaving_never_cancels(live: Live) -> None:
    body = {"prompt": "x", "script": {"tokens": ["a", "b"], "fault": {"kind": "hang", "at": 1}}}
    async with live.client.stream("POST", "/v1/streams", json=body) as owner:
        stream_id = owner.headers["x-tokenwire-stream-id"]
        owner_chunks = owner.aiter_bytes()
        await events_until(owner, 1, owner_chunks)
        async with live.client.stream("GET", f"/v1/streams/{stream_id}/events") as viewer:
            seen = await events_until(viewer, 1)
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        # The viewer left: the turn still runs.
        assert (await live.engine.status(stream_id))["state"] == "active"
        await live.client.post(f"/v1/streams/{stream_id}/cancel")
        rest = await events_until(owner, 10**6, owner_chunks)
    assert rest[-1].type == "done" and rest[-1].reason is Reason.CANCELLED  # type: ignore[union-attr]


async def test_continue_policy_cancels_when_nobody_comes_back() -> None:
    async with live_server(settings(limits={"disconnect_grace_s": 0.2})) as live:
        body = {
            "prompt": "x",
            "on_disconnect": "continue",
            "script": {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}},
        }
        async with live.client.stream("POST", "/v1/streams", json=body) as response:
            stream_id = response.headers["x-tokenwire-stream-id"]
            await events_until(response, 1)
        assert (await live.engine.status(stream_id))["state"] == "active"  # still running: grace
        async with asyncio.timeout(10):
            await live.provider.wait_aborted()
            await live.engine.handle(stream_id).wait()
        assert (await live.engine.status(stream_id))["terminal"]["reason"] == "client_gone"


async def test_a_cursor_the_log_no_longer_holds_is_an_explicit_error() -> None:
    async with live_server(
        settings(limits={"max_stream_events": 100}, coalesce={"window_ms": 0})
    ) as live:
        body = {"prompt": "x", "script": {"tokens": ["x"], "repeat": 300, "delay_ms": 0.5}}
        async with live.client.stream("POST", "/v1/streams", json=body) as response:
            stream_id = response.headers["x-tokenwire-stream-id"]
            await read_sse(response)
        old = await live.client.get(f"/v1/streams/{stream_id}/events?after=1")
        assert old.status_code == 410
        assert old.json()["error"]["code"] == "resume_unavailable"
        bad = await live.client.get(f"/v1/streams/{stream_id}/events?after=abc")
        assert bad.status_code == 400
        gone = await live.client.get("/v1/streams/tw_nope/events")
        assert gone.status_code == 404


async def test_a_retried_post_with_the_same_key_joins_the_same_stream(live: Live) -> None:
    body = {"prompt": "x", "script": {"tokens": ["only", " once"]}}
    headers = {"Idempotency-Key": "k-1"}
    async with live.client.stream("POST", "/v1/streams", json=body, headers=headers) as first:
        one = await read_sse(first)
    async with live.client.stream("POST", "/v1/streams", json=body, headers=headers) as again:
        two = await read_sse(again)
    assert one == two and live.provider.started == 1
    conflict = await live.client.post("/v1/streams", json={"prompt": "other"}, headers=headers)
    assert conflict.status_code == 422
    assert conflict.json()["error"]["code"] == "idempotency_conflict"


async def test_background_turns_answer_202_and_run_without_clients(live: Live) -> None:
    body = {"prompt": "x", "background": True, "script": {"tokens": ["bg"], "delay_ms": 5}}
    accepted = await live.client.post("/v1/streams", json=body)
    assert accepted.status_code == 202
    info = accepted.json()
    assert info["events_url"].endswith(f"/v1/streams/{info['stream_id']}/events")
    async with live.client.stream("GET", info["events_url"]) as response:
        events = await read_sse(response)
    done = check_invariants(events)
    assert isinstance(done, Done) and done.answer == "bg" and live.provider.aborted == 0


async def test_websocket_resume_on_another_socket(live: Live) -> None:
    url = live.url.replace("http://", "ws://") + "/v1/ws"
    body = {
        "type": "generate",
        "request_id": "r",
        "prompt": "x",
        "on_disconnect": "continue",
        "script": SLOW,
    }
    seen: list[Event] = []
    async with websockets.connect(url) as ws:
        await ws.send(orjson.dumps(body).decode())
        while len([e for e in seen if isinstance(e, TextDelta)]) < 2:
            frame = orjson.loads(await ws.recv())
            frame.pop("request_id")
            seen.append(decode_event(frame))
    stream_id = seen[0].stream_id
    async with websockets.connect(url) as ws:
        await ws.send(
            orjson.dumps(
                {
                    "type": "resume",
                    "request_id": "again",
                    "stream_id": stream_id,
                    "after_seq": seen[-1].seq,
                }
            ).decode()
        )
        while seen[-1].type not in ("done", "error"):
            frame = orjson.loads(await ws.recv())
            assert frame.pop("request_id") == "again"
            seen.append(decode_event(frame))
        await ws.send('{"type": "resume", "request_id": "x", "stream_id": "tw_nope"}')
        assert orjson.loads(await ws.recv())["code"] == "unknown_stream"
    done = check_invariants(seen)
    assert isinstance(done, Done) and done.reason is Reason.STOP


async def test_drop_after_every_event_then_resume_reassembles_the_log_exactly() -> None:
    script = {"tokens": [f"w{i} " for i in range(54)], "delay_ms": 1}
    async with live_server(settings(coalesce={"window_ms": 0})) as live:
        body = {"prompt": "x", "background": True, "script": script}
        stream_id = (await live.client.post("/v1/streams", json=body)).json()["stream_id"]
        async with live.client.stream("GET", f"/v1/streams/{stream_id}/events") as response:
            full = await read_sse(response)
        assert len(full) == 60  # start, 2 status, 54 deltas, text.done, usage, done
        for k in range(len(full)):
            got: list[Event] = []
            cursor = 0
            # Read k events, drop; resume from the last id for the rest.
            async with live.client.stream("GET", f"/v1/streams/{stream_id}/events") as first:
                decoder = SSEDecoder()
                async for chunk in first.aiter_bytes():
                    for message in decoder.feed(chunk):
                        if len(got) < k:
                            got.append(decode_event(message.data))
                    if len(got) >= k:
                        break
            cursor = got[-1].seq if got else 0
            async with live.client.stream(
                "GET",
                f"/v1/streams/{stream_id}/events",
                headers={"Last-Event-ID": str(cursor)},
            ) as rest:
                got += await read_sse(rest)
            assert got == full, k


async def test_resume_racing_the_terminal_event_and_two_followers() -> None:
    async with live_server(settings(coalesce={"window_ms": 0})) as live:
        body = {
            "prompt": "x",
            "on_disconnect": "continue",
            "script": {"tokens": ["a", "b", "c"], "delay_ms": 2},
        }
        async with live.client.stream("POST", "/v1/streams", json=body) as response:
            stream_id = response.headers["x-tokenwire-stream-id"]
            start = await events_until(response, 1)

            async def follow(after: int) -> list[Event]:
                async with live.client.stream(
                    "GET", f"/v1/streams/{stream_id}/events?after={after}"
                ) as r:
                    return await read_sse(r)

            a, b = await asyncio.gather(follow(start[-1].seq), follow(start[-1].seq))
        assert a == b
        check_invariants(start + a)
        # After the terminal event: an empty replay that still ends cleanly.
        last = a[-1].seq
        assert await follow(last) == []


async def test_bad_cursors_are_400(live: Live) -> None:
    async with live.client.stream("POST", "/v1/streams", json={"prompt": "x"}) as response:
        stream_id = response.headers["x-tokenwire-stream-id"]
        await read_sse(response)
    for cursor in ("-1", "abc", "1.5", "9" * 40, "10000"):
        bad = await live.client.get(
            f"/v1/streams/{stream_id}/events", headers={"Last-Event-ID": cursor}
        )
        assert bad.status_code == 400, cursor
        assert bad.json()["error"]["code"] == "bad_request"


async def test_twenty_concurrent_posts_with_one_key_make_one_generation(live: Live) -> None:
    body = {"prompt": "x", "script": {"tokens": ["one", " gen"], "delay_ms": 2}}

    async def post() -> list[Event]:
        async with live.client.stream(
            "POST", "/v1/streams", json=body, headers={"Idempotency-Key": "same"}
        ) as response:
            return await read_sse(response)

    results = await asyncio.gather(*(post() for _ in range(20)))
    assert all(r == results[0] for r in results)
    assert live.provider.started == 1
    check_invariants(results[0])
