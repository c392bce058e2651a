"""AsyncTokenwire against a real server: typed events, complete(), cancel, leaving early,
background turns, following a stream as a viewer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from tokenwire import Done, Error, Reason, Start, TextDelta
from tokenwire.client import AsyncTokenwire, TurnError
from tokenwire.protocol import Event

from ..engine.test_turn import check_invariants
from ..server.conftest import Live, live_server, settings
from .conftest import replay

HANG = {"tokens": ["a", "b"], "fault": {"kind": "hang", "at": 2}}


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    async with live_server(settings()) as server:
        yield server


@pytest.fixture
async def tw(live: Live) -> AsyncIterator[AsyncTokenwire]:
    async with AsyncTokenwire(live.url) as client:
        yield client


async def test_a_stream_yields_the_protocol_events(live: Live, tw: AsyncTokenwire) -> None:
    async with tw.stream("x", script={"tokens": ["Hel", "lo"]}) as stream:
        events = [event async for event in stream]
    assert isinstance(events[0], Start)
    done = check_invariants(events)
    assert isinstance(done, Done) and done.answer == "Hello"
    assert stream.stream_id == done.stream_id and stream.last_event_id == done.seq
    assert stream.terminal is done
    assert events == await replay(live.url, done.stream_id)


async def test_the_request_says_continue_on_disconnect_unless_told_otherwise(
    live: Live,
) -> None:
    sent: list[httpx.Request] = []

    async def capture(request: httpx.Request) -> None:
        sent.append(request)

    async with httpx.AsyncClient(event_hooks={"request": [capture]}) as http:
        async with AsyncTokenwire(live.url, http_client=http) as tw:
            await tw.complete("x")
            await tw.complete("x", on_disconnect="cancel")
        assert not http.is_closed  # a client passed in stays the caller's
    posts = [orjson.loads(r.content) for r in sent if r.method == "POST"]
    assert [p["on_disconnect"] for p in posts] == ["continue", "cancel"]
    keys = [r.headers["idempotency-key"] for r in sent if r.method == "POST"]
    assert len(set(keys)) == 2  # one per turn, each kept for that turn's retries


async def test_complete_returns_the_done_event(tw: AsyncTokenwire) -> None:
    done = await tw.complete(
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=50,
        metadata={"k": "v"},
        script={"tokens": ["a", "b", "c"]},
    )
    assert isinstance(done, Done)
    assert (done.answer, done.reason, done.partial) == ("abc", Reason.STOP, False)


async def test_an_error_terminal_is_a_turn_error_from_complete(tw: AsyncTokenwire) -> None:
    fail = {"tokens": ["a"], "fault": {"kind": "fail", "at": 0, "retryable": False}}
    with pytest.raises(TurnError) as info:
        await tw.complete("x", script=fail)
    assert isinstance(info.value.event, Error)
    assert info.value.code == info.value.event.code
    assert info.value.retryable is False
    # Streamed, the same turn ends with the Error event itself, yielded like any other.
    async with tw.stream("x", script=fail) as stream:
        events = [event async for event in stream]
    assert isinstance(check_invariants(events), Error)
    with pytest.raises(TurnError):
        await stream.final()


async def test_cancel_stops_the_turn_and_the_stream_ends_with_done(
    live: Live, tw: AsyncTokenwire
) -> None:
    async with tw.stream("x", script=HANG) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                break
        assert await stream.cancel() is True
        done = await stream.final()
    assert done.reason is Reason.CANCELLED and done.partial
    assert live.provider.aborted == 1
    assert await tw.cancel(done.stream_id) is False  # already over


async def test_leaving_a_stream_early_cancels_its_turn(live: Live, tw: AsyncTokenwire) -> None:
    async with tw.stream("x", script=HANG) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                break
    assert stream.stream_id is not None
    async with asyncio.timeout(10):
        await live.provider.wait_aborted()
        terminal = await live.engine.handle(stream.stream_id).wait()
    assert isinstance(terminal, Done) and terminal.reason is Reason.CANCELLED


async def test_cancel_on_close_false_leaves_the_turn_to_read_later(
    live: Live, tw: AsyncTokenwire
) -> None:
    async with tw.stream("x", script=HANG, cancel_on_close=False) as stream:
        first = await anext(stream)
    stream_id = first.stream_id
    assert (await tw.status(stream_id))["state"] == "active"
    viewed: list[Event] = []
    async with tw.events(stream_id, after=first.seq) as viewer:
        async for event in viewer:
            viewed.append(event)
            if isinstance(event, TextDelta):
                await tw.cancel(stream_id)
    assert isinstance(viewer.terminal, Done) and viewer.terminal.reason is Reason.CANCELLED
    assert [first, *viewed] == await replay(live.url, stream_id)


async def test_a_viewer_leaving_never_stops_the_turn(live: Live, tw: AsyncTokenwire) -> None:
    async with tw.stream("x", script=HANG, cancel_on_close=False) as owner:
        await anext(owner)
    assert owner.stream_id is not None
    async with tw.events(owner.stream_id) as viewer:
        await anext(viewer)
    assert (await tw.status(owner.stream_id))["state"] == "active"
    assert await tw.cancel(owner.stream_id) is True


async def test_a_background_turn_is_followed_and_never_cancelled_by_leaving(
    live: Live, tw: AsyncTokenwire
) -> None:
    async with tw.stream("x", background=True, script=HANG) as stream:
        first = await anext(stream)
    assert isinstance(first, Start)
    assert (await tw.status(first.stream_id))["state"] == "active"
    await tw.cancel(first.stream_id)
    events = [event async for event in tw.events(first.stream_id)]
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.CANCELLED


async def test_iterating_again_continues_where_the_last_loop_stopped(tw: AsyncTokenwire) -> None:
    async with tw.stream("x", script={"tokens": ["a", "b", "c"]}) as stream:
        head = [await anext(stream), await anext(stream)]
        rest = [event async for event in stream]
        assert [event async for event in stream] == []
    check_invariants(head + rest)


async def test_extra_body_and_headers_reach_the_server(live: Live, tw: AsyncTokenwire) -> None:
    done = await tw.complete(
        "x",
        extra_body={"script": {"tokens": ["z"]}},
        extra_headers={"Idempotency-Key": "mine"},
    )
    again = await tw.complete("x", extra_body={"script": {"tokens": ["z"]}}, idempotency_key="mine")
    assert done.answer == "z" and again.stream_id == done.stream_id
    assert live.provider.started == 1
