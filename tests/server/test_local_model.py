"""The default configuration, end to end: real uvicorn, real Gemma 3 270M through llama.cpp."""

from __future__ import annotations

import asyncio

import openai
import orjson
import pytest
import websockets

from tokenwire import Done, Reason, Settings, TextDelta
from tokenwire.client import AsyncTokenwire
from tokenwire.engine.postprocess import canonical_answer
from tokenwire.protocol import decode_event

from ..engine.test_turn import check_invariants
from ..support.model import HUNG_S, NO_DEADLINES
from .conftest import live_server, read_sse

pytestmark = pytest.mark.model


def local_settings() -> Settings:
    # The defaults (the local model on route "default"), tokens sent one by one so the
    # number of deltas is the number of pieces the model produced; no deadline, so a busy
    # machine's slowness is never a timeout.
    return Settings(coalesce={"window_ms": 0}, deadlines=NO_DEADLINES)


async def test_a_local_turn_streams_deltas_and_ends_done() -> None:
    async with live_server(local_settings()) as live:
        body = {
            "prompt": "Give me three tips for writing clear emails.",
            "max_tokens": 64,
            "temperature": 0,
        }
        async with live.client.stream("POST", "/v1/streams", json=body) as response:
            events = await read_sse(response)
        done = check_invariants(events)
        assert isinstance(done, Done) and done.model == "gemma-3-270m"
        assert done.reason in (Reason.STOP, Reason.LENGTH) and not done.partial
        deltas = [e for e in events if isinstance(e, TextDelta)]
        assert len(deltas) >= 5
        assert done.answer and done.answer == "".join(d.delta for d in deltas).strip()
        assert done.usage is not None and done.usage["estimated"] is False
        assert done.usage["output_tokens"] >= len(deltas)
        assert done.timings["first_token"] > 0


async def test_stop_really_stops_the_model_and_frees_it_for_the_next_turn() -> None:
    async with live_server(local_settings()) as live:
        url = live.url.replace("http://", "ws://") + "/v1/ws"
        async with websockets.connect(url) as ws:
            long = {
                "type": "generate",
                "request_id": "long",
                "max_tokens": 400,
                "prompt": "Write a long story about a dragon and a knight.",
            }
            await ws.send(orjson.dumps(long).decode())
            while True:
                frame = orjson.loads(await ws.recv())
                if frame["type"] == "text.delta":
                    break
            await ws.send('{"type": "cancel", "request_id": "long"}')
            short = {
                "type": "generate",
                "request_id": "next",
                "max_tokens": 16,
                "prompt": "Say hello.",
            }
            await ws.send(orjson.dumps(short).decode())
            terminals: dict[str, Done] = {}
            async with asyncio.timeout(HUNG_S):
                while len(terminals) < 2:
                    frame = orjson.loads(await ws.recv())
                    rid = frame.pop("request_id")
                    event = decode_event(frame)
                    if isinstance(event, Done):
                        terminals[rid] = event
    cancelled = terminals["long"]
    assert cancelled.reason is Reason.CANCELLED and cancelled.partial
    assert cancelled.usage is not None and cancelled.usage["output_tokens"] < 400
    assert terminals["next"].reason in (Reason.STOP, Reason.LENGTH)


async def test_the_openai_sdk_and_the_python_client_on_the_local_model() -> None:
    """The client dialects on real generation: the official ``openai`` SDK streaming from Gemma
    (a usage chunk, a finish_reason, text equal to the turn's record), then the Python client
    completing a turn and following that same stream again as a viewer."""
    async with live_server(local_settings()) as live:
        client = openai.AsyncOpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        try:
            stream = await client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "Name three colours."}],
                max_tokens=32,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
        finally:
            await client.close()
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert text.strip() and finishes[-1] in ("stop", "length")
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens > 0
        stream_id = chunks[0].id.removeprefix("chatcmpl-")
        record = await live.engine.handle(stream_id).wait()
        assert isinstance(record, Done) and record.answer == canonical_answer(text)

        async with AsyncTokenwire(live.url) as tw:
            done = await tw.complete("Say hello.", max_tokens=16, temperature=0)
            assert done.answer and done.model == "gemma-3-270m"
            async with tw.events(done.stream_id) as replay:
                events = [event async for event in replay]
            assert events[-1] == done
            deltas = "".join(e.delta for e in events if isinstance(e, TextDelta))
            assert canonical_answer(deltas) == done.answer
