"""AsyncWebSocketSession: many turns at once on one socket, each with its own events in order;
cancel one while the others run; a dropped socket is reconnected and every started turn
resumed, each event still delivered once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tokenwire import Done, Reason, TextDelta
from tokenwire.client import APIError, AsyncTokenwire, ResumeError, WebSocketTurn
from tokenwire.protocol import Event

from ..engine.test_turn import check_invariants
from ..server.conftest import Live, live_server, settings
from ..server.test_access import KEY_A, auth_settings
from .conftest import NO_WAIT, proxied, replay

HANG = {"tokens": ["a", "b", "c"], "fault": {"kind": "hang", "at": 3}}


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    async with live_server(settings()) as server:
        yield server


async def read_all(turn: WebSocketTurn) -> list[Event]:
    return [event async for event in turn]


async def read_until_text(turn: WebSocketTurn, text: str) -> list[Event]:
    """The turn's events until its deltas have carried ``text`` (however they were merged)."""
    events: list[Event] = []
    async for event in turn:
        events.append(event)
        if "".join(e.delta for e in events if isinstance(e, TextDelta)) == text:
            break
    return events


async def test_several_turns_at_once_each_get_their_own_events_in_order(live: Live) -> None:
    async with AsyncTokenwire(live.url) as tw, tw.websocket() as ws:
        turns = [
            await ws.generate("x", script={"tokens": [f"r{i}-", "a", "b", "c"], "delay_ms": 2})
            for i in range(5)
        ]
        assert len({turn.request_id for turn in turns}) == 5
        results = await asyncio.gather(*(read_all(turn) for turn in turns))
    for i, events in enumerate(results):
        done = check_invariants(events)
        assert isinstance(done, Done) and done.answer == f"r{i}-abc"
        assert events == await replay(live.url, done.stream_id)
    assert len({events[0].stream_id for events in results}) == 5


async def test_turns_read_one_after_another_do_not_hold_each_other_up(live: Live) -> None:
    async with AsyncTokenwire(live.url) as tw, tw.websocket() as ws:
        turns = [await ws.generate("x", script={"tokens": ["t"], "repeat": 200}) for _ in range(3)]
        finals = [await turn.final() for turn in reversed(turns)]
    assert [done.answer for done in finals] == ["t" * 200] * 3


async def test_cancel_one_turn_while_the_others_continue(live: Live) -> None:
    async with AsyncTokenwire(live.url) as tw, tw.websocket() as ws:
        hung = await ws.generate("x", script=HANG)
        head = await read_until_text(hung, "abc")
        others = [
            await ws.generate("x", script={"tokens": ["o", "k"], "delay_ms": 1}) for _ in range(2)
        ]
        await hung.cancel()
        cancelled = head + await read_all(hung)
        finished = [await turn.final() for turn in others]
    done = check_invariants(cancelled)
    assert isinstance(done, Done) and done.reason is Reason.CANCELLED
    assert [d.answer for d in finished] == ["ok", "ok"]
    assert all(d.reason is Reason.STOP for d in finished)
    assert live.provider.aborted == 1


@pytest.mark.parametrize("cut_after", [1, 40, 130, 260])
async def test_a_socket_cut_mid_frame_is_reconnected_and_every_turn_resumed(
    live: Live, cut_after: int
) -> None:
    async with proxied(live.url) as proxy:
        async with AsyncTokenwire(proxy.url, resume=NO_WAIT) as tw, tw.websocket() as ws:
            turns = [await ws.generate("x", script=HANG) for _ in range(3)]
            heads = [await read_until_text(turn, "abc") for turn in turns]
            # Every turn is waiting; what the server sends next (the three `done` frames after
            # the cancels, about 390 bytes compressed) is cut after `cut_after` bytes.
            proxy.arm(cut_after)
            for turn in turns:
                await turn.cancel()
            results = [head + await read_all(turn) for head, turn in zip(heads, turns, strict=True)]
        assert proxy.cuts_made == 1 and len(proxy.pipes) == 2
    for events in results:
        done = check_invariants(events)
        assert isinstance(done, Done) and done.reason is Reason.CANCELLED
        assert events == await replay(live.url, done.stream_id)


async def test_a_cancel_sent_as_the_socket_dies_is_sent_again_after_the_reconnection(
    live: Live,
) -> None:
    async with proxied(live.url) as proxy:
        async with AsyncTokenwire(proxy.url, resume=NO_WAIT) as tw, tw.websocket() as ws:
            turn = await ws.generate("x", script=HANG)
            head = await read_until_text(turn, "abc")
            proxy.cut_now()
            await turn.cancel()
            events = head + await read_all(turn)
        assert len(proxy.pipes) == 2
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.CANCELLED
    assert events == await replay(live.url, done.stream_id)


async def test_a_turn_whose_start_never_arrived_cannot_be_resumed(live: Live) -> None:
    async with proxied(live.url) as proxy:
        async with AsyncTokenwire(proxy.url, resume=NO_WAIT) as tw, tw.websocket() as ws:
            proxy.arm(0)  # the next byte from the server cuts the socket
            lost = await ws.generate("x", script={"tokens": ["a"]})
            with pytest.raises(ResumeError) as info:
                await lost.final()
            assert info.value.stream_id is None and info.value.last_event_id == 0
            # The session itself reconnected: it goes on serving new turns.
            again = await ws.generate("x", script={"tokens": ["a"]})
            assert (await again.final()).answer == "a"
        assert len(proxy.pipes) == 2


async def test_a_refused_request_fails_its_turn_only(live: Live) -> None:
    async with AsyncTokenwire(live.url) as tw, tw.websocket() as ws:
        wrong = await ws.generate("x", route="nowhere")
        unknown = await ws.resume("tw_nope")
        right = await ws.generate("x", script={"tokens": ["ok"]})
        with pytest.raises(APIError) as info:
            await wrong.final()
        assert info.value.code == "unknown_route"
        with pytest.raises(APIError) as info:
            await unknown.final()
        assert info.value.code == "unknown_stream"
        assert (await right.final()).answer == "ok"


async def test_resume_follows_a_stream_started_elsewhere(live: Live) -> None:
    async with AsyncTokenwire(live.url) as tw:
        done = await tw.complete("x", script={"tokens": ["a", "b"]})
        async with tw.websocket() as ws:
            whole = await read_all(await ws.resume(done.stream_id))
            tail = await read_all(await ws.resume(done.stream_id, after=2))
    assert whole == await replay(live.url, done.stream_id)
    assert tail == whole[2:]


async def test_the_api_key_goes_in_the_handshake() -> None:
    async with live_server(auth_settings()) as live:
        async with AsyncTokenwire(live.url, api_key=KEY_A) as tw, tw.websocket() as ws:
            turn = await ws.generate("x", script={"tokens": ["ok"]})
            assert (await turn.final()).answer == "ok"
        with pytest.raises(APIError) as info:
            async with AsyncTokenwire(live.url, api_key="") as tw, tw.websocket() as ws:
                await (await ws.generate("x")).final()
        assert info.value.code == "unauthorized"


async def test_leaving_the_session_or_a_turn_early_cancels_the_turns_it_started(
    live: Live,
) -> None:
    async with AsyncTokenwire(live.url) as tw:
        async with tw.websocket() as ws:
            async with await ws.generate("x", script=HANG) as closed_early:
                await read_until_text(closed_early, "abc")
            left_open = await ws.generate("x", script=HANG)
            await read_until_text(left_open, "abc")
            kept = await ws.generate("x", script=HANG, cancel_on_close=False)
            await read_until_text(kept, "abc")
        async with asyncio.timeout(10):
            await live.provider.wait_aborted(2)
        for turn in (closed_early, left_open):
            assert turn.stream_id is not None
            terminal = await live.engine.handle(turn.stream_id).wait()
            assert isinstance(terminal, Done) and terminal.reason is Reason.CANCELLED
        assert kept.stream_id is not None
        assert (await tw.status(kept.stream_id))["state"] == "active"
        await tw.cancel(kept.stream_id)
