"""WS /v1/ws keeps its promises under hostile timing: one answer per command, whatever races
(a cancel right after the generate, a burst of thousands of commands), fair shares per socket,
a command rate limit with its own close code, no traceback for bad bytes."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tokenwire import Done, Reason
from tokenwire.testing import assert_turn_invariants

from .conftest import Live, live_server, settings
from .test_ws import ws_url

GUARD_S = 60
"""Only stops a hung test (a request that never gets its answer); never decides a pass."""

HANG = {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}}


def frame(kind: str, rid: str, **fields: Any) -> str:
    return orjson.dumps({"type": kind, "request_id": rid, **fields}).decode()


async def answers(ws: Any, request_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Every frame per request id, until each has its one answer: a terminal event (``done``
    or ``error`` with a ``seq``) or a refusal (``error`` without a stream)."""
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    waiting = set(request_ids)
    async with asyncio.timeout(GUARD_S):
        while waiting:
            data = orjson.loads(await ws.recv())
            rid = data["request_id"]
            got[rid].append(data)
            if data["type"] in ("done", "error"):
                assert rid in waiting, f"{rid} got a second answer: {data}"
                waiting.discard(rid)
    return got


def events_of(frames: list[dict[str, Any]]) -> list[Any]:
    from tokenwire.protocol import decode_event

    return [decode_event({k: v for k, v in f.items() if k != "request_id"}) for f in frames]


async def test_a_cancel_right_after_generate_ends_the_turn_as_cancelled(live: Live) -> None:
    """Stop pressed right after Send, 30 times in a row on one socket: each request gets its
    stream, start through done (partial, cancelled), and the turn is recorded."""
    rids = {f"r{i}" for i in range(30)}
    async with websockets.connect(ws_url(live)) as ws:
        for i in range(30):
            await ws.send(frame("generate", f"r{i}", prompt="x", script=HANG))
            await ws.send(frame("cancel", f"r{i}"))
        got = await answers(ws, rids)
    for rid in rids:
        terminal = assert_turn_invariants(events_of(got[rid]))
        assert isinstance(terminal, Done), (rid, terminal)
        assert terminal.reason is Reason.CANCELLED and terminal.partial
        assert live.engine.handle(terminal.stream_id).terminal == terminal
    assert live.engine.active() == []


async def test_a_cancel_after_the_end_is_not_a_second_answer(live: Live) -> None:
    async with websockets.connect(ws_url(live)) as ws:
        await ws.send(frame("generate", "r", prompt="x"))
        got = await answers(ws, {"r"})
        await ws.send(frame("cancel", "r"))
        await ws.send(frame("cancel", "never"))  # this one is answered: nothing had that id
        late = orjson.loads(await ws.recv())
    assert got["r"][-1]["type"] == "done"
    assert (late["request_id"], late["code"]) == ("never", "unknown_request")


async def test_a_burst_of_commands_gets_one_answer_each() -> None:
    """10,000 generates sent at once on one socket (default limits, the rate limit off), each
    of a turn that keeps running: every one is answered, by its turn's ``start`` or by
    ``overloaded``; none is dropped (the reader waits for room in the outbox instead)."""
    count = 10_000
    async with live_server(settings(limits={"ws_commands_per_s": 0})) as live:
        async with websockets.connect(ws_url(live), max_queue=None) as ws:
            frames = [frame("generate", f"r{i}", prompt="x", script=HANG) for i in range(count)]
            sender = asyncio.create_task(_send_all(ws, frames))
            first: dict[str, dict[str, Any]] = {}
            async with asyncio.timeout(GUARD_S):
                while len(first) < count:
                    data = orjson.loads(await ws.recv())
                    if data["type"] in ("start", "error"):
                        assert data["request_id"] not in first, data
                        first[data["request_id"]] = data
            await sender
    kinds = defaultdict(int)
    for data in first.values():
        kinds[data["type"] if data["type"] == "start" else data["code"]] += 1
    assert set(kinds) == {"start", "overloaded"}, kinds
    assert kinds["start"] == live.engine.settings.limits.max_turns_per_connection


async def _send_all(ws: Any, frames: list[str]) -> None:
    for text in frames:
        await ws.send(text)


async def test_one_socket_cannot_take_every_turn_slot() -> None:
    config = settings(limits={"max_turns_per_connection": 2, "max_active_turns": 10})
    async with live_server(config) as live:
        async with (
            websockets.connect(ws_url(live)) as greedy,
            websockets.connect(ws_url(live)) as other,
        ):
            for rid in ("a", "b", "c"):
                await greedy.send(frame("generate", rid, prompt="x", script=HANG))
            refused = await answers(greedy, {"c"})
            assert refused["c"][-1]["code"] == "overloaded"
            assert "connection" in refused["c"][-1]["message"]
            # The other socket still starts (and finishes) its turn.
            await other.send(frame("generate", "mine", prompt="x"))
            done = (await answers(other, {"mine"}))["mine"][-1]
            assert done["type"] == "done" and done["reason"] == "stop"
            # Once one of its turns ends, the greedy socket may start another.
            await greedy.send(frame("cancel", "a"))
            assert (await answers(greedy, {"a"}))["a"][-1]["reason"] == "cancelled"
            await greedy.send(frame("generate", "d", prompt="x"))
            assert (await answers(greedy, {"d"}))["d"][-1]["reason"] == "stop"


async def test_a_socket_over_its_command_rate_is_closed_with_4008() -> None:
    config = settings(limits={"ws_commands_per_s": 1, "ws_command_burst": 5})
    async with live_server(config) as live:
        async with websockets.connect(ws_url(live)) as ws:
            answered = 0
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(GUARD_S):
                    for i in range(50):
                        await ws.send(frame("cancel", f"n{i}"))
                    while True:
                        assert orjson.loads(await ws.recv())["code"] == "unknown_request"
                        answered += 1
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4008, "too many commands")
    assert 5 <= answered < 50


@pytest.fixture
def uvicorn_records() -> Iterator[list[logging.LogRecord]]:
    """What uvicorn's own logger emits (it does not propagate to the root logger)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


async def test_invalid_utf8_closes_with_1007_and_logs_no_traceback(
    live: Live, uvicorn_records: list[logging.LogRecord]
) -> None:
    for _ in range(3):
        async with websockets.connect(ws_url(live)) as ws:
            await ws.send(b'{"type": "generate", "request_id": "\xff\xfe"}', text=True)
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(GUARD_S):
                    await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1007
    noted = [r for r in uvicorn_records if "UTF-8" in r.getMessage()]
    assert len(noted) == 3
    assert all(r.exc_info is None and r.levelno < logging.WARNING for r in noted), [
        (r.levelname, r.getMessage()) for r in noted
    ]
    assert not [r for r in uvicorn_records if r.exc_info], "a traceback reached the log"


def masked_text_frame(text: str) -> bytes:
    """One client→server text frame (RFC 6455: clients mask), for a socket driven by hand."""
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + len(payload).to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_a_socket_that_stops_reading_is_reset_not_left_holding_its_backlog() -> None:
    """A reader the server gives up on has its connection closed at once: a close frame would
    wait behind the megabytes it never takes (and their buffers would stay allocated)."""
    from .test_streams import SLOW_READER_SCRIPT, assert_reset

    config = settings(
        limits={"slow_client_send_timeout_s": 0.3, "slow_client_lag_events": 50},
        coalesce={"window_ms": 0},
    )
    async with live_server(config) as live:
        ended = asyncio.Event()
        live.engine.hooks.subscribe(lambda _event: ended.set(), types={"done"})
        host, port = live.url.removeprefix("http://").split(":")
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, int(port)))
        await loop.sock_sendall(
            sock,
            b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n",
        )
        handshake = b""
        async with asyncio.timeout(GUARD_S):
            while b"\r\n\r\n" not in handshake:
                handshake += await loop.sock_recv(sock, 1)
        assert handshake.startswith(b"HTTP/1.1 101")
        generate = frame("generate", "big", prompt="x", script=SLOW_READER_SCRIPT)
        await loop.sock_sendall(sock, masked_text_frame(generate))
        # Never read again. The server gives up on this reader, ends the turn...
        async with asyncio.timeout(GUARD_S):
            await ended.wait()
        # ... and resets the connection instead of queueing a close behind the backlog.
        await assert_reset(sock)
        assert live.engine.metrics.slow_client_disconnects._value.get() == 1  # type: ignore[attr-defined]
        assert live.provider.aborted == 1  # the turn was stopped, not run to the end
