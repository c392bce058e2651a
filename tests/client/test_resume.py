"""Resuming over a real connection cut at arbitrary bytes (a loopback proxy closes it): the
events delivered equal the stream the server holds, each once, in order; and when resuming is
impossible, a ResumeError says why."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

from tokenwire import Done, Reason, TextDelta, TextDone
from tokenwire.client import (
    APIConnectionError,
    APIStatusError,
    AsyncTokenwire,
    ResumeError,
    ResumePolicy,
    Tokenwire,
)
from tokenwire.client.options import ClientOptions
from tokenwire.client.resume import StreamPlan
from tokenwire.protocol import Event, Start, encode_sse_event

from ..engine.test_turn import check_invariants
from ..server.conftest import Live, live_server, settings
from .conftest import NO_WAIT, proxied, replay

TOKENS = [f"t{i} " for i in range(30)] + ["\n\ndata: not an event\n\n", "id: 7\r\n", "é🙂", "end."]
SCRIPT = {"tokens": TOKENS, "delay_ms": 1}


# -- the plan, sans-I/O --------------------------------------------------------------------

OPTIONS = ClientOptions("http://h/llm", "tw_key")
SSE = {"content-type": "text/event-stream; charset=utf-8"}


def start(seq: int = 1) -> bytes:
    event = Start(stream_id="tw_1", seq=seq, model="m", route="r", created_at=1.0)
    return encode_sse_event(event)


def new_turn(policy: ResumePolicy = NO_WAIT, **body: Any) -> StreamPlan:
    return StreamPlan.turn(
        OPTIONS, policy, {"prompt": "x", **body}, idempotency_key=None, headers=None
    )


def test_the_plan_posts_once_then_resumes_with_the_last_event_id() -> None:
    plan = new_turn()
    post = plan.next_request()
    assert (post.method, post.url, post.json) == (
        "POST",
        "http://h/llm/v1/streams",
        {"prompt": "x"},
    )
    assert post.headers["Authorization"] == "Bearer tw_key"
    assert plan.on_headers(200, {**SSE, "x-tokenwire-stream-id": "tw_1"})
    assert [e.seq for e in plan.feed(start())] == [1]
    assert plan.on_drop(APIConnectionError("cut")) == 0
    resume = plan.next_request()
    assert (resume.method, resume.url) == ("GET", "http://h/llm/v1/streams/tw_1/events")
    assert resume.headers["Last-Event-ID"] == "1" and resume.json is None


def test_a_post_without_an_answer_is_repeated_with_the_same_idempotency_key() -> None:
    plan = new_turn()
    key = plan.next_request().headers["Idempotency-Key"]
    plan.on_drop(APIConnectionError("no answer"))
    again = plan.next_request()
    assert again.method == "POST" and again.headers["Idempotency-Key"] == key
    assert new_turn().next_request().headers["Idempotency-Key"] != key


def test_errors_before_a_drop_are_the_callers_and_after_one_a_resume_error() -> None:
    plan = new_turn()
    plan.next_request()
    with pytest.raises(APIStatusError):
        plan.on_body(422, {}, b'{"error": {"code": "invalid_request", "message": "no"}}')
    plan = new_turn()
    plan.next_request()
    plan.on_headers(200, {**SSE, "x-tokenwire-stream-id": "tw_1"})
    plan.feed(start())
    plan.on_drop(APIConnectionError("cut"))
    plan.next_request()
    assert plan.on_body(503, {"retry-after": "1"}, b"") == 0  # busy: tried again
    plan.next_request()
    with pytest.raises(ResumeError) as info:
        plan.on_body(410, {}, b'{"error": {"code": "resume_unavailable", "message": "gone"}}')
    assert info.value.last_event_id == 1
    assert isinstance(info.value.__cause__, APIStatusError)


def test_failures_in_a_row_are_bounded_and_progress_starts_the_count_over() -> None:
    plan = new_turn(ResumePolicy(max_attempts=2, backoff_initial_s=1, backoff_max_s=1))
    plan.next_request()
    plan.on_headers(200, {**SSE, "x-tokenwire-stream-id": "tw_1"})
    for seq in (1, 2, 3):
        delays = [plan.on_drop(APIConnectionError("cut")) for _ in range(2)]
        assert all(0.5 <= d <= 1 for d in delays)  # backoff, with jitter
        assert len(plan.feed(start(seq))) == 1
    with pytest.raises(ResumeError):
        for _ in range(3):
            plan.on_drop(APIConnectionError("cut"))


def test_a_background_turn_is_followed_from_its_first_event() -> None:
    plan = new_turn(background=True)
    plan.next_request()
    assert not plan.on_headers(202, {"content-type": "application/json"})
    assert plan.on_body(202, {}, b'{"stream_id": "tw_1"}') == 0
    follow = plan.next_request()
    assert follow.url.endswith("/v1/streams/tw_1/events")
    assert follow.headers["Last-Event-ID"] == "0"
    assert not plan.owner  # leaving never cancels a background turn


# -- over a real connection, cut --------------------------------------------------------------


def check_resumed(events: list[Event], original: list[Event]) -> Done:
    """The resumed stream is the server's stream: ids 1..N once each, text intact."""
    assert events == original
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.STOP
    text = "".join(e.delta for e in events if isinstance(e, TextDelta))
    assert [e.text for e in events if isinstance(e, TextDone)] == [text]
    assert text == "".join(TOKENS)
    return done


async def stream_through(url: str, **kwargs: Any) -> tuple[list[Event], str]:
    async with (
        AsyncTokenwire(url, resume=NO_WAIT) as tw,
        tw.stream("x", script=SCRIPT, **kwargs) as stream,
    ):
        events = [event async for event in stream]
        assert stream.stream_id is not None
        return events, stream.stream_id


async def total_bytes(live: Live) -> int:
    """What the server sends for one whole turn, headers included."""
    async with proxied(live.url) as proxy:
        await stream_through(proxy.url)
    return proxy.pipes[0].sent


@pytest.mark.parametrize("seed", range(4))
async def test_a_stream_cut_at_random_points_resumes_to_the_uninterrupted_stream(
    seed: int,
) -> None:
    rng = random.Random(seed)
    async with live_server(settings(coalesce={"window_ms": 0})) as live:
        total = await total_bytes(live)
        plans: list[list[int | None]] = [[rng.randrange(1, total - 16)] for _ in range(3)]
        plans.append([rng.randrange(1, total // 4) for _ in range(3)])  # cut again and again
        for cuts in plans:
            async with proxied(live.url, cuts) as proxy:
                events, stream_id = await stream_through(proxy.url)
            check_resumed(events, await replay(live.url, stream_id))
            assert proxy.cuts_made >= 1
            assert len(proxy.pipes) in (proxy.cuts_made, proxy.cuts_made + 1)


async def test_a_cut_before_the_answer_headers_repeats_the_post_and_joins_its_turn() -> None:
    async with live_server(settings()) as live:
        async with proxied(live.url, [20]) as proxy:
            events, stream_id = await stream_through(proxy.url)
        check_resumed(events, await replay(live.url, stream_id))
        assert len(proxy.pipes) == 2
        assert live.provider.started == 1  # the second POST joined the first one's turn


async def test_the_sync_client_resumes_the_same_way() -> None:
    async with live_server(settings(coalesce={"window_ms": 0})) as live:
        for cuts in ([333], [150, 400, 400]):
            async with proxied(live.url, list(cuts)) as proxy:

                def read(url: str = proxy.url) -> tuple[list[Event], str | None]:
                    with Tokenwire(url, resume=NO_WAIT) as tw, tw.stream("x", script=SCRIPT) as s:
                        return list(s), s.stream_id

                events, stream_id = await asyncio.to_thread(read)
            assert stream_id is not None and proxy.cuts_made >= 1
            check_resumed(events, await replay(live.url, stream_id))


async def test_a_connection_gone_silent_is_given_up_by_the_read_timeout_and_resumed() -> None:
    slow = {"tokens": [f"t{i} " for i in range(20)], "delay_ms": 20}
    timeout = httpx.Timeout(10.0, read=0.3)  # far below the heartbeat: only the stall trips it
    async with live_server(settings()) as live, proxied(live.url) as proxy:
        async with AsyncTokenwire(proxy.url, timeout=timeout, resume=NO_WAIT) as tw:
            async with tw.stream("x", script=slow) as stream:
                events = []
                async for event in stream:
                    events.append(event)
                    if isinstance(event, TextDelta) and len(proxy.pipes) == 1:
                        proxy.stall()
        assert stream.stream_id is not None and len(proxy.pipes) >= 2
        assert events == await replay(live.url, stream.stream_id)


async def resume_refused(live: Live, before_resuming: Any) -> tuple[ResumeError, list[Event]]:
    """Cut the stream after its first events, hold the reconnection until
    ``before_resuming(stream_id)`` is done, then let it through."""
    async with proxied(live.url, [700]) as proxy:
        gate = proxy.hold(1)
        seen: list[Event] = []
        async with AsyncTokenwire(proxy.url, resume=NO_WAIT) as tw:
            stream = tw.stream("x", script={"tokens": ["x"], "repeat": 300})

            async def consume() -> None:
                async for event in stream:
                    seen.append(event)

            task = asyncio.create_task(consume())
            await proxy.wait_connections(2)
            assert stream.stream_id is not None
            await before_resuming(stream.stream_id)
            gate.set()
            with pytest.raises(ResumeError) as info:
                await task
    assert info.value.stream_id == stream.stream_id
    assert info.value.last_event_id == len(seen)
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    return info.value, seen


async def test_a_cursor_the_server_no_longer_holds_is_a_resume_error() -> None:
    config = settings(limits={"max_stream_events": 100}, coalesce={"window_ms": 0})
    async with live_server(config) as live:

        async def let_the_log_move_on(stream_id: str) -> None:
            await live.engine.handle(stream_id).wait()

        error, _ = await resume_refused(live, let_the_log_move_on)
    cause = error.__cause__
    assert isinstance(cause, APIStatusError)
    assert (cause.status, cause.code) == (410, "resume_unavailable")


async def test_a_stream_the_server_forgot_is_a_resume_error() -> None:
    async with live_server(settings(limits={"max_retained_streams": 0})) as live:

        async def let_it_finish_and_expire(stream_id: str) -> None:
            await live.engine.handle(stream_id).wait()

        error, _ = await resume_refused(live, let_it_finish_and_expire)
    cause = error.__cause__
    assert isinstance(cause, APIStatusError)
    assert (cause.status, cause.code) == (404, "unknown_stream")


async def test_reconnections_that_deliver_nothing_are_bounded() -> None:
    policy = ResumePolicy(max_attempts=2, backoff_initial_s=0, backoff_max_s=0)
    hang = {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}}
    async with live_server(settings()) as live:
        # The first connection is cut after its first events, the two reconnections before any.
        async with proxied(live.url, [700, 30, 30]) as proxy:
            async with AsyncTokenwire(proxy.url, resume=policy) as tw:
                with pytest.raises(ResumeError) as info:
                    async with tw.stream("x", script=hang) as stream:
                        async for _ in stream:
                            pass
            assert [pipe.sent for pipe in proxy.pipes[1:3]] == [30, 30]
            assert len(proxy.pipes) == 4  # the fourth: the cancel sent on leaving
        assert isinstance(info.value.__cause__, APIConnectionError)
        assert info.value.last_event_id > 0
        # Leaving the stream cancelled its turn: it does not run on for nobody.
        stream_id = info.value.stream_id
        assert stream_id is not None
        async with asyncio.timeout(10):
            await live.provider.wait_aborted()
            await live.engine.handle(stream_id).wait()
        status = await live.engine.status(stream_id)
        assert status["terminal"]["reason"] == "cancelled"
