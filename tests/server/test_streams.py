"""POST /v1/streams and the REST endpoints, against real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from tokenwire import Done, Engine, Reason, TextDelta, create_router, engine_lifespan
from tokenwire.protocol import SSEDecoder, decode_event

from ..engine.test_turn import check_invariants
from ..support.server import serve
from .conftest import Live, live_server, read_sse, settings


async def test_one_sse_turn_end_to_end(live: Live) -> None:
    tricky = ["Hel", 'lo\n\ndata: {"type":"done"}\n\n', "\r", " ✓"]
    body = {"prompt": "hi", "script": {"tokens": tricky}}
    async with live.client.stream("POST", "/v1/streams", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        stream_id = response.headers["x-tokenwire-stream-id"]
        events = await read_sse(response)
    done = check_invariants(events)
    assert isinstance(done, Done) and done.stream_id == stream_id
    assert "".join(e.delta for e in events if isinstance(e, TextDelta)) == "".join(tricky)
    status = (await live.client.get(f"/v1/streams/{stream_id}")).json()
    assert status["state"] == "completed" and status["terminal"]["reason"] == "stop"


async def test_sse_ids_are_the_seq_and_heartbeats_are_comments() -> None:
    async with live_server(settings(server={"heartbeat_s": 0.02})) as live:
        body = {"prompt": "hi", "script": {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}}}
        async with live.client.stream("POST", "/v1/streams", json=body) as response:
            stream_id = response.headers["x-tokenwire-stream-id"]
            decoder = SSEDecoder()
            ids: list[str | None] = []
            chunks = response.aiter_bytes()
            async for chunk in chunks:
                ids += [m.id for m in decoder.feed(chunk)]
                if decoder.comments >= 2 and ids:
                    break
            await live.client.post(f"/v1/streams/{stream_id}/cancel")
            async for chunk in chunks:
                ids += [m.id for m in decoder.feed(chunk)]
    assert ids == [str(i) for i in range(1, len(ids) + 1)]
    assert decoder.comments >= 2


async def test_cancel_endpoint_stops_the_upstream(live: Live) -> None:
    body = {"prompt": "hi", "script": {"tokens": ["a", "b"], "fault": {"kind": "hang", "at": 1}}}
    async with live.client.stream("POST", "/v1/streams", json=body) as response:
        stream_id = response.headers["x-tokenwire-stream-id"]
        decoder = SSEDecoder()
        events = []
        async for chunk in response.aiter_bytes():
            for message in decoder.feed(chunk):
                event = decode_event(message.data)
                events.append(event)
                if isinstance(event, TextDelta):
                    answer = await live.client.post(f"/v1/streams/{stream_id}/cancel")
                    assert answer.json() == {"stream_id": stream_id, "cancelled": True}
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.CANCELLED and done.answer == "a"
    assert live.provider.aborted == 1
    again = await live.client.post(f"/v1/streams/{stream_id}/cancel")
    assert again.json()["cancelled"] is False
    unknown = await live.client.post("/v1/streams/tw_nope/cancel")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_stream"


async def test_client_disconnect_aborts_the_upstream(live: Live) -> None:
    body = {"prompt": "hi", "script": {"tokens": ["a", "b"], "fault": {"kind": "hang", "at": 1}}}
    async with live.client.stream("POST", "/v1/streams", json=body) as response:
        stream_id = response.headers["x-tokenwire-stream-id"]
        decoder = SSEDecoder()
        async for chunk in response.aiter_bytes():
            if any(m.event == "text.delta" for m in decoder.feed(chunk)):
                break
    # Leaving the block closed the connection.
    async with asyncio.timeout(10):
        await live.provider.wait_aborted()
        await live.engine.handle(stream_id).wait()
    status = (await live.client.get(f"/v1/streams/{stream_id}")).json()
    assert status["terminal"]["reason"] == "client_gone"


async def test_active_streams_are_listed(live: Live) -> None:
    body = {"prompt": "hi", "script": {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}}}
    async with live.client.stream("POST", "/v1/streams", json=body) as response:
        stream_id = response.headers["x-tokenwire-stream-id"]
        decoder = SSEDecoder()
        async for chunk in response.aiter_bytes():
            if any(m.event == "text.delta" for m in decoder.feed(chunk)):
                break
        listing = (await live.client.get("/v1/streams", params={"state": "active"})).json()
        [entry] = listing["streams"]
        assert entry["stream_id"] == stream_id and entry["route"] == "default"
        assert entry["tokens"] == 1 and entry["age_s"] >= 0
        status = (await live.client.get(f"/v1/streams/{stream_id}")).json()
        assert status["state"] == "active"
        await live.client.post(f"/v1/streams/{stream_id}/cancel")
    bad = await live.client.get("/v1/streams", params={"state": "bogus"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


BAD_BODIES: list[tuple[bytes, int, str]] = [
    (b"{not json", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (b'{"prompt": "x", "bogus": 1}', 422, "invalid_request"),
    (b'{"prompt": "x", "max_tokens": "5"}', 422, "invalid_request"),
    (b'{"prompt": 5}', 422, "invalid_request"),
    (b'{"messages": []}', 422, "invalid_request"),
    (b'{"messages": [{"role": "user", "content": ""}]}', 422, "invalid_request"),
    (b'{"prompt": ""}', 422, "invalid_request"),
    (b'{"prompt": "x", "route": "nope"}', 422, "unknown_route"),
    (b'{"prompt": "x", "tier": "huge"}', 422, "unknown_tier"),
    (b'{"prompt": "x", "tier": 5}', 422, "invalid_request"),
    (b'{"prompt": "x", "script": {"tokens": 3}}', 422, "invalid_request"),
]


@pytest.mark.parametrize(("raw", "status", "code"), BAD_BODIES)
async def test_bad_input_gets_a_json_4xx(live: Live, raw: bytes, status: int, code: str) -> None:
    response = await live.client.post(
        "/v1/streams", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


async def test_oversize_body_is_refused_before_it_is_read() -> None:
    async with live_server(settings(limits={"max_body_bytes": 2048})) as live:
        declared = await live.client.post("/v1/streams", content=b"x" * 4096)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "body_too_large"

        async def chunks() -> Any:
            for _ in range(100):
                yield b'{"prompt": "' + b"y" * 1024

        chunked = await live.client.post(
            "/v1/streams", content=chunks(), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413

        # A declared size over the limit is answered without sending the body at all.
        host, port = live.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n"
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413")
        writer.close()


async def test_unknown_paths_and_methods_answer_json(live: Live) -> None:
    missing = await live.client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = await live.client.get("/v1/streams/x/cancel")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    unknown = await live.client.get("/v1/streams/tw_unknown")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_stream"


async def test_overload_is_503_with_retry_after() -> None:
    async with live_server(settings(limits={"max_active_turns": 1})) as live:
        body = {"prompt": "hi", "script": {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}}}
        async with live.client.stream("POST", "/v1/streams", json=body) as first:
            stream_id = first.headers["x-tokenwire-stream-id"]
            second = await live.client.post("/v1/streams", json={"prompt": "x"})
            assert second.status_code == 503 and "retry-after" in second.headers
            assert second.json()["error"]["code"] == "overloaded"
            await live.client.post(f"/v1/streams/{stream_id}/cancel")


async def test_healthz_and_metrics(live: Live) -> None:
    health = await live.client.get("/healthz")
    assert health.json()["status"] == "ok"
    async with live.client.stream("POST", "/v1/streams", json={"prompt": "x"}) as response:
        await read_sse(response)
    metrics = (await live.client.get("/metrics")).text
    assert 'tokenwire_turns_total{reason="stop",type="done"} 1.0' in metrics
    assert "tokenwire_time_to_first_token_seconds_bucket" in metrics
    assert "tokenwire_active_streams 0.0" in metrics


async def peer_closed(sock: socket.socket) -> int:
    """Wait (in a thread, without reading) until the far side has closed or reset the
    connection; the poll events seen. Unread data does not count: only a FIN or an RST."""

    stop = threading.Event()

    def wait() -> int:
        poller = select.poll()
        poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        while not stop.is_set():  # in slices, so that a cancelled wait ends its thread
            for _fd, events in poller.poll(200):
                return events
        return 0

    try:
        return await asyncio.to_thread(wait)
    finally:
        stop.set()


async def assert_reset(sock: socket.socket) -> None:
    """The server reset the connection (without this side reading first); closes ``sock``."""
    async with asyncio.timeout(60):
        events = await peer_closed(sock)
    assert events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    with pytest.raises(ConnectionResetError):
        while sock.recv(1 << 20):
            pass
    sock.close()


SLOW_READER_SCRIPT = {
    "tokens": ["z" * 65536],
    "repeat": 400,
    "delay_ms": 0.2,
    "fault": {"kind": "hang", "at": 400},
}
"""26 MB of text, far more than the socket buffers hold, then a hang: only the server giving up
on the reader ends the turn (it cannot finish first, whatever the machine's speed)."""

SLOW_READER_BODIES = {
    "/v1/streams": {"prompt": "x", "script": SLOW_READER_SCRIPT},
    "/v1/chat/completions": {
        "model": "default",
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
        "tokenwire": {"script": SLOW_READER_SCRIPT},
    },
}


@pytest.mark.parametrize("path", list(SLOW_READER_BODIES))
async def test_a_client_that_stops_reading_is_disconnected_and_memory_stays_bounded(
    path: str,
) -> None:
    config = settings(
        limits={"slow_client_send_timeout_s": 0.3, "slow_client_lag_events": 50},
        coalesce={"window_ms": 0},
    )
    async with live_server(config) as live:
        ended = asyncio.Event()
        ended_with: list[str] = []

        async def on_end(event: Any) -> None:
            ended_with.append(event.reason.value)
            ended.set()

        live.engine.hooks.subscribe(on_end, types={"done"})
        body = orjson.dumps(SLOW_READER_BODIES[path])
        host, port = live.url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        request = (
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), len(body))
        ) + body
        await asyncio.get_running_loop().sock_sendall(sock, request)
        # Never read. The server must give up on this reader and end the turn...
        async with asyncio.timeout(30):
            await ended.wait()
        # ... and close the connection, unsent megabytes and all (a graceful close would wait
        # for this reader to take them, i.e. forever).
        await assert_reset(sock)
        assert ended_with == ["client_gone"]
        assert live.engine.metrics.slow_client_disconnects._value.get() == 1  # type: ignore[attr-defined]
        assert live.provider.aborted == 1  # the turn was stopped, not run to the end


async def test_tokenwire_mounts_in_an_existing_fastapi_app() -> None:
    engine = Engine(settings())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        async with engine_lifespan(engine):
            yield

    host = FastAPI(lifespan=lifespan)

    @host.get("/own")
    async def own() -> dict[str, str]:
        return {"app": "host"}

    host.include_router(create_router(engine), prefix="/tw")
    async with serve(host) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/own")).json() == {"app": "host"}
        async with client.stream("POST", "/tw/v1/streams", json={"prompt": "x"}) as response:
            done = check_invariants(await read_sse(response))
    assert isinstance(done, Done) and done.reason is Reason.STOP


async def test_client_disconnect_closes_a_real_upstream_connection() -> None:
    from tokenwire import Settings

    from ..support.upstream import Behavior, FakeUpstream

    async with FakeUpstream() as up:
        up.push(Behavior(tokens=["a", "b"], hang_after=1))
        config = Settings(
            providers={
                "up": {"kind": "openai", "base_url": up.openai_base_url, "api_key_env": None}
            },
            routes={"default": {"providers": ["up"]}},
        )
        async with live_server(config) as live:
            async with live.client.stream("POST", "/v1/streams", json={"prompt": "x"}) as response:
                decoder = SSEDecoder()
                async for chunk in response.aiter_bytes():
                    if any(m.event == "text.delta" for m in decoder.feed(chunk)):
                        break
            async with asyncio.timeout(10):
                await up.wait_client_disconnect()


async def test_structured_channel_over_sse(live: Live) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    body = {
        "prompt": "x",
        "extraction": {"schema": schema, "strategy": "sequential"},
        "script": {"tokens": ["Seven"], "extraction": {"tokens": ['{"n": 7}']}},
    }
    async with live.client.stream("POST", "/v1/streams", json=body) as response:
        events = await read_sse(response)
    done = check_invariants(events)
    types = [e.type for e in events]
    assert types.index("text.done") < types.index("structured.done") < types.index("done")
    assert isinstance(done, Done) and done.structured is not None
    assert done.structured["data"] == {"n": 7}
    bad = await live.client.post(
        "/v1/streams", json={"prompt": "x", "extraction": {"schema": "unknown"}}
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
