"""Tokenwire, the blocking client, against a real server (run in a thread: the server lives in
the test's event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tokenwire import Done, Error, Reason, Start, TextDelta
from tokenwire.client import Tokenwire, TurnError
from tokenwire.protocol import Event

from ..engine.test_turn import check_invariants
from ..server.conftest import Live, live_server, settings
from .conftest import replay

HANG = {"tokens": ["a", "b"], "fault": {"kind": "hang", "at": 2}}


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    async with live_server(settings()) as server:
        yield server


async def test_stream_and_complete(live: Live) -> None:
    def run() -> tuple[list[Event], Done]:
        with Tokenwire(live.url) as tw:
            with tw.stream("x", script={"tokens": ["Hel", "lo"]}) as stream:
                events = list(stream)
            return events, tw.complete("x", script={"tokens": ["a", "b"]})

    events, done = await asyncio.to_thread(run)
    assert isinstance(events[0], Start)
    streamed = check_invariants(events)
    assert isinstance(streamed, Done) and streamed.answer == "Hello"
    assert events == await replay(live.url, streamed.stream_id)
    assert done.answer == "ab" and done.reason is Reason.STOP


async def test_an_error_terminal_is_a_turn_error(live: Live) -> None:
    fail = {"tokens": ["a"], "fault": {"kind": "fail", "at": 0, "retryable": False}}

    def run() -> TurnError:
        with Tokenwire(live.url) as tw, pytest.raises(TurnError) as info:
            tw.complete("x", script=fail)
        return info.value

    error = await asyncio.to_thread(run)
    assert isinstance(error.event, Error) and not error.retryable


async def test_cancel_and_leaving_early(live: Live) -> None:
    def run() -> tuple[Done, str | None]:
        with Tokenwire(live.url) as tw:
            with tw.stream("x", script=HANG) as stream:
                for event in stream:
                    if isinstance(event, TextDelta):
                        break
                assert stream.cancel() is True
                done = stream.final()
            with tw.stream("x", script=HANG) as left:
                next(left)
            return done, left.stream_id

    done, left = await asyncio.to_thread(run)
    assert done.reason is Reason.CANCELLED and done.partial
    assert left is not None
    async with asyncio.timeout(10):
        await live.provider.wait_aborted(2)
        terminal = await live.engine.handle(left).wait()
    assert isinstance(terminal, Done) and terminal.reason is Reason.CANCELLED


async def test_following_a_stream(live: Live) -> None:
    done = await live.engine.handle(
        (await live.engine.submit({"prompt": "x", "script": {"tokens": ["a", "b"]}})).stream_id
    ).wait()

    def run() -> tuple[list[Event], list[Event]]:
        with Tokenwire(live.url) as tw:
            return list(tw.events(done.stream_id)), list(tw.events(done.stream_id, after=3))

    whole, tail = await asyncio.to_thread(run)
    assert whole == await replay(live.url, done.stream_id)
    assert tail == whole[3:]
