"""WS /v1/ws: many turns on one socket, per-request errors, close codes."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tokenwire import Done, Reason
from tokenwire.protocol import Event, decode_event

from ..engine.test_turn import check_invariants
from .conftest import Live, live_server, settings


def ws_url(live: Live) -> str:
    return live.url.replace("http://", "ws://") + "/v1/ws"


async def recv_json(ws: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        data: dict[str, Any] = orjson.loads(await ws.recv())
    return data


async def collect_until_terminal(ws: Any, request_ids: set[str]) -> dict[str, list[Event]]:
    """Read frames until every request id got its terminal event."""
    events: dict[str, list[Event]] = defaultdict(list)
    open_ids = set(request_ids)
    while open_ids:
        frame = await recv_json(ws)
        rid = frame.pop("request_id")
        event = decode_event(frame)
        events[rid].append(event)
        if event.type in ("done", "error"):
            open_ids.discard(rid)
    return events


async def test_concurrent_turns_on_one_socket(live: Live) -> None:
    async with websockets.connect(ws_url(live)) as ws:
        for i in range(5):
            script = {"tokens": [f"r{i}-", "a", "b", "c"], "delay_ms": 2}
            await ws.send(
                orjson.dumps(
                    {"type": "generate", "request_id": f"r{i}", "prompt": "x", "script": script}
                ).decode()
            )
        events = await collect_until_terminal(ws, {f"r{i}" for i in range(5)})
    assert len(events) == 5
    stream_ids = set()
    for i in range(5):
        done = check_invariants(events[f"r{i}"])
        assert isinstance(done, Done) and done.answer == f"r{i}-abc"
        stream_ids.add(done.stream_id)
    assert len(stream_ids) == 5


async def test_cancel_one_turn_leaves_the_other_running(live: Live) -> None:
    async with websockets.connect(ws_url(live)) as ws:
        hang = {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}}
        await ws.send(
            orjson.dumps(
                {"type": "generate", "request_id": "slow", "prompt": "x", "script": hang}
            ).decode()
        )
        while (await recv_json(ws))["type"] != "text.delta":
            pass
        await ws.send(
            orjson.dumps(
                {
                    "type": "generate",
                    "request_id": "fast",
                    "prompt": "x",
                    "script": {"tokens": ["ok"]},
                }
            ).decode()
        )
        await ws.send('{"type": "cancel", "request_id": "slow"}')
        events = await collect_until_terminal(ws, {"slow", "fast"})
    slow = events["slow"][-1]
    assert isinstance(slow, Done) and slow.reason is Reason.CANCELLED
    fast = events["fast"][-1]
    assert isinstance(fast, Done) and fast.reason is Reason.STOP
    assert live.provider.aborted == 1


async def test_bad_messages_answer_their_request_and_the_socket_keeps_serving(live: Live) -> None:
    async with websockets.connect(ws_url(live)) as ws:
        await ws.send('{"type": "generate", "request_id": "bad", "prompt": "x", "bogus": 1}')
        answer = await recv_json(ws)
        assert (answer["type"], answer["request_id"], answer["code"]) == (
            "error",
            "bad",
            "invalid_request",
        )
        await ws.send('{"type": "generate", "prompt": "no id"}')
        assert (await recv_json(ws))["request_id"] is None
        await ws.send('{"type": "explode", "request_id": "x"}')
        assert (await recv_json(ws))["code"] == "invalid_request"
        await ws.send('{"type": "cancel", "request_id": "never-started"}')
        assert (await recv_json(ws))["code"] == "unknown_request"
        await ws.send('{"type": "generate", "request_id": "r", "prompt": "x", "route": "nope"}')
        assert (await recv_json(ws))["code"] == "unknown_route"
        # ... and the socket still runs turns.
        await ws.send('{"type": "generate", "request_id": "good", "prompt": "x"}')
        events = await collect_until_terminal(ws, {"good"})
    assert isinstance(check_invariants(events["good"]), Done)


async def test_duplicate_request_id_is_refused_while_running(live: Live) -> None:
    async with websockets.connect(ws_url(live)) as ws:
        hang = {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}}
        frame = orjson.dumps(
            {"type": "generate", "request_id": "r", "prompt": "x", "script": hang}
        ).decode()
        await ws.send(frame)
        while (await recv_json(ws))["type"] != "text.delta":
            pass
        await ws.send(frame)
        answer = await recv_json(ws)
        assert answer["code"] == "duplicate_request_id"


@pytest.mark.parametrize(
    ("frame", "code"),
    [("not json at all", 1007), (b"\x00binary", 1003), ("[1,2,3]", 1007)],
)
async def test_unusable_frames_close_the_socket(live: Live, frame: Any, code: int) -> None:
    async with websockets.connect(ws_url(live)) as ws:
        await ws.send(frame)
        with pytest.raises(ConnectionClosed) as info:
            await recv_json(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == code


async def test_oversize_frame_closes_with_1009() -> None:
    async with live_server(settings(limits={"max_ws_frame_bytes": 4096})) as live:
        async with websockets.connect(ws_url(live), max_size=None) as ws:
            await ws.send(
                '{"type": "generate", "request_id": "r", "prompt": "' + "x" * 10_000 + '"}'
            )
            with pytest.raises(ConnectionClosed) as info:
                await recv_json(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_closing_the_socket_stops_its_turns(live: Live) -> None:
    async with websockets.connect(ws_url(live)) as ws:
        hang = {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}}
        for rid in ("one", "two"):
            await ws.send(
                orjson.dumps(
                    {"type": "generate", "request_id": rid, "prompt": "x", "script": hang}
                ).decode()
            )
        seen: set[str] = set()
        while len(seen) < 2:
            frame = await recv_json(ws)
            if frame["type"] == "text.delta":
                seen.add(frame["stream_id"])
    async with asyncio.timeout(10):
        await live.provider.wait_aborted(2)
        for stream_id in seen:
            await live.engine.handle(stream_id).wait()
    assert live.engine.active() == []
