"""Retries by Idempotency-Key over real HTTP: what a client whose connection dropped gets when it
asks again (engine.idempotency has the rule)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tokenwire import Done, Reason, TextDelta
from tokenwire.engine.turn import Turn
from tokenwire.protocol import Event

from ..engine.test_turn import check_invariants
from .conftest import Live, live_server, read_sse, settings
from .test_resume import events_until

GUARD_S = 60
"""Only stops a hung test; never decides an outcome."""

ANSWER = {"tokens": ["the", " whole", " answer"]}


def one_slot() -> Any:
    """A scripted provider that runs one call at a time: a turn queued behind a busy slot
    has shown nothing visible, however slow the machine."""
    return settings(
        providers={"s": {"kind": "scripted", "concurrency": 1}},
        coalesce={"window_ms": 0},
    )


@contextlib.asynccontextmanager
async def busy_slot(live: Live) -> AsyncIterator[str]:
    """Hold the provider's only slot (a turn that streams one token, then hangs) until the
    block ends, then cancel it. Yields its stream id."""
    body = {"prompt": "busy", "script": {"tokens": ["busy"], "fault": {"kind": "hang", "at": 1}}}
    async with live.client.stream("POST", "/v1/streams", json=body) as response:
        stream_id = response.headers["x-tokenwire-stream-id"]
        # One iterator for the whole block: an abandoned one would close the connection, and
        # the blocker's drop would free the slot.
        chunks = response.aiter_bytes()
        await events_until(response, 1, chunks)  # its first token: it holds the slot now
        try:
            yield stream_id
        finally:
            await live.client.post(f"/v1/streams/{stream_id}/cancel")
            await events_until(response, 10**6, chunks)


async def raw_post(live: Live, body: dict[str, Any], key: str) -> tuple[Any, Any]:
    """A POST written on a bare socket; returns (reader, writer) without reading anything."""
    host, port = live.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = orjson.dumps(body)
    writer.write(
        b"POST /v1/streams HTTP/1.1\r\n"
        + f"host: {host}:{port}\r\n".encode()
        + b"content-type: application/json\r\n"
        + f"idempotency-key: {key}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    return reader, writer


async def drop(writer: Any) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def keyed_turn(live: Live, key: str) -> Turn:
    """The turn the key currently names (the engine's own table, read, never changed)."""
    entry = live.engine._idempotent.get((None, key))
    assert entry is not None and entry.turn.done()
    return entry.turn.result()


async def post_events(live: Live, body: dict[str, Any], headers: dict[str, str]) -> list[Event]:
    async with live.client.stream("POST", "/v1/streams", json=body, headers=headers) as response:
        assert response.status_code == 200
        return await read_sse(response)


async def test_a_retry_after_a_drop_before_the_headers_gets_the_answer() -> None:
    body = {"prompt": "x", "script": ANSWER}
    async with asyncio.timeout(GUARD_S), live_server(one_slot()) as live:
        ended: asyncio.Queue[Event] = asyncio.Queue()
        live.engine.hooks.subscribe(ended.put, types=["done"])
        async with busy_slot(live):
            # The POST is read and its turn queued behind the busy slot; the client is gone
            # before it reads a byte of the response.
            _reader, writer = await raw_post(live, body, "drop-1")
            await drop(writer)
            first = await ended.get()
            assert isinstance(first, Done) and first.reason is Reason.CLIENT_GONE
            assert first.answer == ""
        again = await post_events(live, body, {"Idempotency-Key": "drop-1"})
    done = check_invariants(again)
    # What the client meant: the answer, on a fresh stream, not the empty client_gone one.
    assert isinstance(done, Done) and done.reason is Reason.STOP
    assert done.answer == "the whole answer"
    assert done.stream_id != first.stream_id


async def test_a_retry_that_arrives_before_the_drop_is_noticed_keeps_the_turn() -> None:
    body = {"prompt": "x", "script": ANSWER}
    async with asyncio.timeout(GUARD_S), live_server(one_slot()) as live:
        async with busy_slot(live):
            reader, writer = await raw_post(live, body, "drop-2")
            await reader.readuntil(b"\r\n\r\n")  # its headers: it reads the turn now
            turn = keyed_turn(live, "drop-2")
            retry = asyncio.create_task(post_events(live, body, {"Idempotency-Key": "drop-2"}))
            # No event tells that a reader attached, or left: yield to the loop until it has.
            while turn.readers < 2:  # noqa: ASYNC110
                await asyncio.sleep(0)
            await drop(writer)
            while turn.readers > 1:  # noqa: ASYNC110
                await asyncio.sleep(0)
        events = await retry
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.STOP
    assert done.answer == "the whole answer" and done.stream_id == turn.stream_id


async def test_a_retry_with_last_event_id_gets_no_event_twice() -> None:
    # As @microsoft/fetch-event-source retries: the same POST, with the key and Last-Event-ID.
    tokens = [f"t{i} " for i in range(30)]
    body = {
        "prompt": "x",
        "on_disconnect": "continue",
        "script": {"tokens": tokens, "delay_ms": 5},
    }
    headers = {"Idempotency-Key": "fes-1"}
    async with asyncio.timeout(GUARD_S), live_server(settings(coalesce={"window_ms": 0})) as live:
        async with live.client.stream(
            "POST", "/v1/streams", json=body, headers=headers
        ) as response:
            first = await events_until(response, 6)
        last_id = first[-1].seq
        again = await post_events(live, body, {**headers, "Last-Event-ID": str(last_id)})
        assert live.provider.started == 1
    seqs = [e.seq for e in again]
    assert seqs == list(range(last_id + 1, last_id + 1 + len(again)))
    done = check_invariants([*first, *again])
    assert isinstance(done, Done) and done.reason is Reason.STOP
    text = "".join(e.delta for e in [*first, *again] if isinstance(e, TextDelta))
    assert text == "".join(tokens)


async def test_a_retry_that_saw_part_of_a_cancelled_answer_resumes_it(live: Live) -> None:
    # It holds visible text of the stream: a fresh answer would contradict what it showed.
    body = {"prompt": "x", "script": {"tokens": [f"w{i} " for i in range(40)], "delay_ms": 5}}
    headers = {"Idempotency-Key": "seen-1"}
    async with asyncio.timeout(GUARD_S):
        async with live.client.stream(
            "POST", "/v1/streams", json=body, headers=headers
        ) as response:
            first = await events_until(response, 2)
        await keyed_turn(live, "seen-1").wait()
        again = await post_events(live, body, {**headers, "Last-Event-ID": str(first[-1].seq)})
    done = again[-1]
    assert isinstance(done, Done) and done.reason is Reason.CLIENT_GONE
    assert done.stream_id == first[0].stream_id and live.provider.started == 1
    assert [e.seq for e in again] == list(range(first[-1].seq + 1, done.seq + 1))


async def test_a_last_event_id_ahead_of_the_keyed_stream_is_refused(live: Live) -> None:
    body = {"prompt": "x", "script": ANSWER}
    headers = {"Idempotency-Key": "ahead-1"}
    await post_events(live, body, headers)
    refused = await live.client.post(
        "/v1/streams", json=body, headers={**headers, "Last-Event-ID": "999"}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "bad_request"
