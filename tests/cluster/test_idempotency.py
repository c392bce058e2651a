"""Retries by Idempotency-Key on a scale-out deployment (issue 13 item 7): the rule of
``engine.idempotency`` (tests/server/test_idempotency.py, embedded) holds across gateways, with
real gateway and worker processes and a real redis-server. The retry always reaches the other
gateway: nothing of the first request's state may live in one process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis

from tokenwire.protocol import Done, Event, Reason, TextDelta

from ..server.test_resume import events_until
from ..support.cluster import Cluster, Process, client
from .test_scale_out import check_stream, read_events

GUARD_S = 60
"""Only stops a hung test; never decides an outcome."""

ANSWER = {"tokens": ["the", " whole", " answer"]}


@contextlib.asynccontextmanager
async def deployment(cluster: Cluster) -> AsyncIterator[tuple[Process, Process]]:
    """Two gateways and one worker that runs one turn at a time: a turn queued behind a busy
    one has shown nothing visible, however slow the machine."""
    cluster.config += "\n[coalesce]\nwindow_ms = 0\n"
    gateway_a, gateway_b = await cluster.gateway("gateway-a"), await cluster.gateway("gateway-b")
    await cluster.worker("worker-1", concurrency=1)
    yield gateway_a, gateway_b


@contextlib.asynccontextmanager
async def busy_slot(gateway: Process) -> AsyncIterator[None]:
    """Hold the worker's only slot (a turn that streams one token, then hangs) until the block
    ends, then cancel it."""
    body = {"prompt": "busy", "script": {"tokens": ["busy"], "fault": {"kind": "hang", "at": 1}}}
    async with client(gateway) as http, http.stream("POST", "/v1/streams", json=body) as response:
        stream_id = response.headers["x-tokenwire-stream-id"]
        chunks = response.aiter_bytes()  # one iterator: abandoning one closes the connection
        await events_until(response, 1, chunks)  # its first token: it holds the slot now
        try:
            yield
        finally:
            await http.post(f"/v1/streams/{stream_id}/cancel")
            await events_until(response, 10**6, chunks)


async def raw_post(gateway: Process, body: dict[str, Any], key: str) -> tuple[Any, Any, str]:
    """A POST written on a bare socket, read up to its headers: (reader, writer, stream id).
    The client holds no event of the stream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    payload = orjson.dumps(body)
    writer.write(
        b"POST /v1/streams HTTP/1.1\r\n"
        + f"host: 127.0.0.1:{gateway.port}\r\n".encode()
        + b"content-type: application/json\r\n"
        + f"idempotency-key: {key}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
    assert head.startswith("http/1.1 200"), head
    stream_id = head.split("x-tokenwire-stream-id: ", 1)[1].split("\r\n", 1)[0]
    return reader, writer, stream_id


async def drop(writer: Any) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def post_events(
    gateway: Process, body: dict[str, Any], headers: dict[str, str]
) -> list[Event]:
    async with client(gateway) as http:
        async with http.stream("POST", "/v1/streams", json=body, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            return await read_events(response)


async def replay(gateway: Process, stream_id: str) -> list[Event]:
    async with client(gateway) as http:
        async with http.stream("GET", f"/v1/streams/{stream_id}/events") as response:
            assert response.status_code == 200, await response.aread()
            return await read_events(response)


async def until(store: aioredis.Redis, key: str, value: bytes | None) -> None:
    """Until ``key`` holds ``value``: what another process did, seen in Redis (no event
    crosses the processes here; the test's guard stops a hang)."""
    while await store.get(key) != value:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def test_a_retry_after_a_drop_before_the_headers_gets_the_answer(cluster: Cluster) -> None:
    body = {"prompt": "x", "script": ANSWER}
    store = aioredis.from_url(cluster.redis.url)
    try:
        async with asyncio.timeout(GUARD_S), deployment(cluster) as (gateway_a, gateway_b):
            async with busy_slot(gateway_a), store.pubsub() as control:
                await control.subscribe("tw:control")
                # Its turn is queued behind the busy slot; the client is gone before it
                # reads a byte of the stream.
                _reader, writer, first_id = await raw_post(gateway_a, body, "drop-1")
                await drop(writer)
                # The gateway stops it as client_gone (the signal to the workers).
                while True:
                    message = await control.get_message(ignore_subscribe_messages=True, timeout=1)
                    if message is not None and orjson.loads(message["data"]) == {
                        "action": "cancel",
                        "stream_id": first_id,
                        "reason": "client_gone",
                    }:
                        break
            first = check_stream(await replay(gateway_b, first_id))
            assert first.reason is Reason.CLIENT_GONE and first.answer == ""
            again = await post_events(gateway_b, body, {"Idempotency-Key": "drop-1"})
    finally:
        await store.aclose()
    done = check_stream(again)
    # What the client meant: the answer, on a fresh stream, not the empty client_gone one.
    assert done.reason is Reason.STOP and done.answer == "the whole answer"
    assert done.stream_id != first_id


async def test_a_retry_that_arrives_before_the_drop_is_noticed_keeps_the_turn(
    cluster: Cluster,
) -> None:
    body = {"prompt": "x", "script": ANSWER}
    store = aioredis.from_url(cluster.redis.url)
    try:
        async with asyncio.timeout(GUARD_S), deployment(cluster) as (gateway_a, gateway_b):
            async with busy_slot(gateway_a):
                _reader, writer, stream_id = await raw_post(gateway_a, body, "drop-2")
                headers = {"Idempotency-Key": "drop-2"}
                retry = asyncio.create_task(post_events(gateway_b, body, headers))
                originators = f"tw:{{{stream_id}}}:originators"
                await until(store, originators, b"1")  # the retry reads it, on gateway B
                await drop(writer)
                await until(store, originators, b"0")  # gateway A saw the first one leave
            events = await retry
    finally:
        await store.aclose()
    done = check_stream(events)
    assert done.reason is Reason.STOP
    assert done.answer == "the whole answer" and done.stream_id == stream_id


async def test_a_retry_with_last_event_id_gets_no_event_twice(cluster: Cluster) -> None:
    # As @microsoft/fetch-event-source retries: the same POST, with the key and Last-Event-ID.
    tokens = [f"t{i} " for i in range(30)]
    body = {"prompt": "x", "on_disconnect": "continue", "script": {"tokens": tokens, "delay_ms": 5}}
    headers = {"Idempotency-Key": "fes-1"}
    async with asyncio.timeout(GUARD_S), deployment(cluster) as (gateway_a, gateway_b):
        async with (
            client(gateway_a) as http,
            http.stream("POST", "/v1/streams", json=body, headers=headers) as response,
        ):
            first = await events_until(response, 6)
        last_id = first[-1].seq
        again = await post_events(gateway_b, body, {**headers, "Last-Event-ID": str(last_id)})
    assert [e.seq for e in again] == list(range(last_id + 1, last_id + 1 + len(again)))
    done = check_stream([*first, *again])
    assert done.reason is Reason.STOP and done.stream_id == first[0].stream_id
    text = "".join(e.delta for e in [*first, *again] if isinstance(e, TextDelta))
    assert text == "".join(tokens)


async def test_a_retry_that_saw_part_of_a_cancelled_answer_resumes_it(cluster: Cluster) -> None:
    # It holds visible text of the stream: a fresh answer would contradict what it showed.
    body = {"prompt": "x", "script": {"tokens": [f"w{i} " for i in range(40)], "delay_ms": 5}}
    headers = {"Idempotency-Key": "seen-1"}
    async with asyncio.timeout(GUARD_S), deployment(cluster) as (gateway_a, gateway_b):
        async with (
            client(gateway_a) as http,
            http.stream("POST", "/v1/streams", json=body, headers=headers) as response,
        ):
            first = await events_until(response, 2)
        stream_id = first[0].stream_id
        ended = check_stream(await replay(gateway_b, stream_id))
        assert ended.reason is Reason.CLIENT_GONE
        again = await post_events(gateway_b, body, {**headers, "Last-Event-ID": str(first[-1].seq)})
    done = again[-1]
    assert isinstance(done, Done) and done.reason is Reason.CLIENT_GONE
    assert done.stream_id == stream_id
    assert [e.seq for e in again] == list(range(first[-1].seq + 1, done.seq + 1))


async def test_a_last_event_id_ahead_of_the_keyed_stream_is_refused(cluster: Cluster) -> None:
    body = {"prompt": "x", "script": ANSWER}
    headers = {"Idempotency-Key": "ahead-1"}
    async with asyncio.timeout(GUARD_S), deployment(cluster) as (gateway_a, gateway_b):
        check_stream(await post_events(gateway_a, body, headers))
        async with client(gateway_b) as http:
            refused = await http.post(
                "/v1/streams", json=body, headers={**headers, "Last-Event-ID": "999"}
            )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "bad_request"
