"""Every way a turn can end, with the scripted provider producing the faults."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from tokenwire import Done, Engine, Error, Event, Reason, TextDelta, TextDone
from tokenwire.engine.scheduler import Priority
from tokenwire.protocol import is_terminal

from .conftest import scripted, scripted_settings


async def collect(engine: Engine, body: dict[str, Any]) -> list[Event]:
    handle = await engine.submit(body)
    return [event async for event in handle.events()]


def check_invariants(events: list[Event]) -> Done | Error:
    """One terminal event, last; seq contiguous from 1; deltas equal text.done."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "start"
    terminals = [e for e in events if is_terminal(e)]
    assert len(terminals) == 1 and terminals[0] is events[-1]
    text = "".join(e.delta for e in events if isinstance(e, TextDelta))
    done_text = [e.text for e in events if isinstance(e, TextDone)]
    assert done_text in ([], [text])
    terminal = events[-1]
    assert isinstance(terminal, Done | Error)
    return terminal


def body(**script: Any) -> dict[str, Any]:
    return {"prompt": "hi", "script": script}


async def test_a_clean_stream_completes_with_canonical_answer(engine: Engine) -> None:
    events = await collect(engine, body(tokens=["Hel", "lo", " \n\n\n\nthere  "]))
    done = check_invariants(events)
    assert isinstance(done, Done)
    assert (done.status, done.partial, done.reason) == ("completed", False, Reason.STOP)
    assert done.answer == "Hello\n\nthere"
    assert done.attempts == 1 and done.model == "scripted" and done.route == "default"
    assert done.usage == {"input_tokens": 1, "output_tokens": 3, "estimated": False}
    assert {"queued", "first_token", "stream", "post_process", "total"} <= set(done.timings)


async def test_max_tokens_reached_is_length_not_partial(engine: Engine) -> None:
    done = check_invariants(await collect(engine, body(tokens=["a"], finish="length")))
    assert isinstance(done, Done)
    assert (done.status, done.partial, done.reason) == ("incomplete", False, Reason.LENGTH)


async def test_fail_before_first_token_retries_then_errors(engine: Engine) -> None:
    events = await collect(engine, body(fault={"kind": "fail", "at": 0, "message": "boom"}))
    error = check_invariants(events)
    assert isinstance(error, Error)
    # The script's message plays the upstream's words: logged, never in the event.
    assert error.code == "upstream_error" and error.message == "the upstream provider failed"
    assert error.retryable
    assert error.attempts == 2
    assert scripted(engine).started == 2


async def test_a_transient_failure_is_retried_invisibly(engine: Engine) -> None:
    events = await collect(engine, body(tokens=["ok"], fault={"kind": "fail", "at": 0, "times": 1}))
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.STOP and done.attempts == 2
    assert done.answer == "ok"


async def test_non_retryable_failure_falls_back_to_the_next_provider(engine: Engine) -> None:
    script = {"tokens": ["x"], "fault": {"kind": "fail", "at": 0, "retryable": False}}
    # The fault applies to every attempt of every provider: both fail, once each.
    error = check_invariants(
        await collect(engine, {"prompt": "p", "route": "chain", "script": script})
    )
    assert isinstance(error, Error) and error.attempts == 2 and not error.retryable
    assert scripted(engine, "a").started == 1 and scripted(engine, "b").started == 1


async def test_fallback_answers_when_the_first_provider_keeps_failing(engine: Engine) -> None:
    # Provider a fails both its tries (turn attempts 1 and 2); provider b answers (attempt 3).
    script = {"tokens": ["fine"], "fault": {"kind": "fail", "at": 0, "times": 2}}
    done = check_invariants(
        await collect(engine, {"prompt": "p", "route": "chain", "script": script})
    )
    assert isinstance(done, Done) and done.reason is Reason.STOP
    assert done.attempts == 3 and done.model == "backup" and done.answer == "fine"
    assert scripted(engine, "a").started == 2 and scripted(engine, "b").started == 1


async def test_fail_after_visible_text_is_partial_and_never_retried(engine: Engine) -> None:
    events = await collect(engine, body(tokens=["a", "b", "c"], fault={"kind": "fail", "at": 2}))
    done = check_invariants(events)
    assert isinstance(done, Done)
    assert (done.partial, done.status, done.reason) == (True, "incomplete", Reason.UPSTREAM_ERROR)
    assert done.answer == "ab" and done.attempts == 1
    assert scripted(engine).started == 1


async def test_truncated_stream_is_never_completed(engine: Engine) -> None:
    done = check_invariants(
        await collect(engine, body(tokens=["a", "b"], fault={"kind": "truncate", "at": 2}))
    )
    assert isinstance(done, Done)
    assert done.reason is Reason.UPSTREAM_TRUNCATED and done.partial and done.answer == "ab"


async def test_truncated_before_any_text_is_retried_then_an_error(engine: Engine) -> None:
    error = check_invariants(await collect(engine, body(fault={"kind": "truncate", "at": 0})))
    assert isinstance(error, Error) and error.code == "upstream_truncated"
    assert scripted(engine).started == 2


async def test_first_token_deadline_aborts_the_upstream(engine: Engine) -> None:
    events = await collect(
        engine, {**body(fault={"kind": "hang", "at": 0}), "deadlines": {"first_token_s": 0.05}}
    )
    error = check_invariants(events)
    assert isinstance(error, Error) and error.code == "timeout_first_token"
    assert scripted(engine).aborted == 1


async def test_idle_deadline_after_text_is_partial(engine: Engine) -> None:
    events = await collect(
        engine,
        {**body(tokens=["a", "b"], fault={"kind": "hang", "at": 1}), "deadlines": {"idle_s": 0.05}},
    )
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.TIMEOUT_IDLE and done.partial
    assert done.answer == "a"
    assert scripted(engine).aborted == 1


async def test_total_deadline_cuts_a_slow_stream(engine: Engine) -> None:
    events = await collect(
        engine, {**body(tokens=["t"] * 1000, delay_ms=5), "deadlines": {"total_s": 0.1}}
    )
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.TIMEOUT_TOTAL and done.partial
    assert 0 < len(done.answer) < 1000
    assert scripted(engine).aborted == 1


async def test_cancel_mid_stream_aborts_upstream_and_ends_cancelled(engine: Engine) -> None:
    handle = await engine.submit(body(tokens=["a", "b"], fault={"kind": "hang", "at": 1}))
    events: list[Event] = []
    async for event in handle.events():
        events.append(event)
        if isinstance(event, TextDelta):
            assert handle.cancel()
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.CANCELLED and done.partial
    assert done.answer == "a"
    assert scripted(engine).aborted == 1
    assert not handle.cancel()


async def test_cancel_before_any_text_is_done_not_error(engine: Engine) -> None:
    handle = await engine.submit(body(fault={"kind": "hang", "at": 0}))
    async for event in handle.events():
        if event.type == "status" and getattr(event, "phase", None) == "generating":
            handle.cancel()
    terminal = await handle.wait()
    assert isinstance(terminal, Done) and terminal.reason is Reason.CANCELLED
    assert terminal.partial and terminal.answer == ""


async def test_leaving_run_early_stops_the_turn_as_client_gone(engine: Engine) -> None:
    async with contextlib.aclosing(
        engine.run(body(tokens=["a", "b"], fault={"kind": "hang", "at": 1}))
    ) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                stream_id = event.stream_id
                break
    await scripted(engine).wait_aborted()
    await engine.handle(stream_id).wait()
    assert (await engine.status(stream_id))["terminal"]["reason"] == "client_gone"


async def test_shutdown_ends_turns_in_flight_with_shutdown() -> None:
    engine = Engine(scripted_settings())
    await engine.open()
    handle = await engine.submit(body(tokens=["a", "b"], fault={"kind": "hang", "at": 1}))
    async for event in handle.events():
        if isinstance(event, TextDelta):
            break
    await engine.aclose()
    terminal = handle.terminal
    assert isinstance(terminal, Done) and terminal.reason is Reason.SHUTDOWN
    with pytest.raises(Exception, match="shutting down"):
        await engine.submit(body())


async def test_first_delta_is_immediate_then_deltas_coalesce() -> None:
    settings = scripted_settings(coalesce={"window_ms": 10_000})
    async with Engine(settings) as engine:
        events = await collect(engine, body(tokens=[str(i) for i in range(50)]))
    deltas = [e.delta for e in events if isinstance(e, TextDelta)]
    # The first token alone, then the rest merged (the window never closed): two deltas.
    assert deltas == ["0", "".join(str(i) for i in range(1, 50))]


async def test_zero_window_sends_every_token() -> None:
    async with Engine(scripted_settings(coalesce={"window_ms": 0})) as engine:
        events = await collect(engine, body(tokens=["a", "b", "c"], delay_ms=1))
    assert [e.delta for e in events if isinstance(e, TextDelta)] == ["a", "b", "c"]


async def test_pending_text_leaves_when_its_window_closes() -> None:
    settings = scripted_settings(coalesce={"window_ms": 20})
    async with Engine(settings) as engine:
        handle = await engine.submit(body(tokens=["a", "b", "c"], fault={"kind": "hang", "at": 3}))
        deltas: list[str] = []
        async for event in handle.events():
            if isinstance(event, TextDelta):
                deltas.append(event.delta)
                if "".join(deltas) == "abc":
                    handle.cancel()
    # "b" and "c" waited in the window while the upstream hung; the timer let them out.
    assert deltas == ["a", "bc"]


async def test_tool_call_deltas_are_assembled(engine: Engine) -> None:
    calls = [{"name": "lookup", "arguments": ['{"q":', ' "x"}'], "call_id": "c1"}]
    events = await collect(engine, body(tokens=[], tool_calls=calls, finish="tool_calls"))
    check_invariants(events)
    tool = [e for e in events if e.type == "tool.call"]
    assert len(tool) == 1
    assert (tool[0].call_id, tool[0].name, tool[0].arguments) == ("c1", "lookup", '{"q": "x"}')  # type: ignore[union-attr]


async def test_sources_are_ordered_deduplicated_and_merged(engine: Engine) -> None:
    sources = [
        {"url": "https://a.example/1", "title": "A", "origin": "retrieval"},
        {"id": "doc-7", "snippet": "seven"},
        {"url": "https://a.example/1", "title": "A again", "snippet": "first lacked this"},
        {"title": "no url and no id: cannot be cited"},
    ]
    done = check_invariants(await collect(engine, body(tokens=["ok"], sources=sources)))
    assert isinstance(done, Done)
    assert done.sources == ["https://a.example/1", "doc-7"]
    assert done.source_details == [
        {
            "url": "https://a.example/1",
            "title": "A",
            "origin": "retrieval",
            "snippet": "first lacked this",
        },
        {"id": "doc-7", "snippet": "seven"},
    ]


async def test_a_partial_answer_keeps_its_sources(engine: Engine) -> None:
    script = body(
        tokens=["a", "b"],
        sources=[{"url": "https://a.example/x"}],
        fault={"kind": "fail", "at": 1, "retryable": False},
    )
    done = check_invariants(await collect(engine, script))
    assert isinstance(done, Done) and done.partial
    assert done.sources == ["https://a.example/x"]


async def test_requests_the_engine_cannot_serve(engine: Engine) -> None:
    from tokenwire import RequestError

    for bad, code in [
        ({"prompt": "x", "route": "nope"}, "unknown_route"),
        ({"prompt": "x", "bogus": 1}, "invalid_request"),
        ({"messages": []}, "invalid_request"),
        ({"prompt": "x", "max_tokens": 10**9}, "invalid_request"),
        ({"prompt": "x", "script": {"tokens": "notalist"}}, "invalid_request"),
    ]:
        with pytest.raises(RequestError) as info:
            await engine.submit(bad)
        assert info.value.code == code


async def test_active_turns_are_listed_and_limited() -> None:
    from tokenwire import Overloaded

    async with Engine(scripted_settings(limits={"max_active_turns": 1})) as engine:
        handle = await engine.submit(body(fault={"kind": "hang", "at": 0}))
        [active] = engine.active()
        assert active.stream_id == handle.stream_id and active.route == "default"
        assert (await engine.status(handle.stream_id))["state"] == "active"
        with pytest.raises(Overloaded):
            await engine.submit(body())
        handle.cancel()
        await handle.wait()
        assert engine.active() == []
        assert (await engine.status(handle.stream_id))["state"] == "incomplete"


async def test_many_concurrent_turns_each_end_exactly_once(engine: Engine) -> None:
    faults: list[dict[str, Any] | None] = [
        None,
        {"kind": "fail", "at": 1},
        {"kind": "truncate", "at": 2},
        {"kind": "fail", "at": 0},
    ]
    handles = [
        await engine.submit(
            body(
                tokens=["x", "y", "z"],
                delay_ms=1,
                **({"fault": faults[i % 4]} if faults[i % 4] else {}),
            )
        )
        for i in range(40)
    ]

    async def drain(h: Any) -> list[Event]:
        return [e async for e in h.events()]

    results = await asyncio.gather(*(drain(h) for h in handles))
    reasons = [check_invariants(events) for events in results]
    assert len(reasons) == 40


async def test_provider_concurrency_queues_turns_and_reports_the_wait() -> None:
    settings = scripted_settings(
        providers={"a": {"kind": "scripted", "concurrency": 1}, "b": {"kind": "scripted"}}
    )
    async with Engine(settings) as engine:
        first = await engine.submit(body(tokens=["a"], fault={"kind": "hang", "at": 1}))
        async for event in first.events():
            if isinstance(event, TextDelta):
                break
        second = await engine.submit(body(tokens=["b"]))
        scheduler = engine.schedulers["a"]
        for _ in range(100):  # let the second turn reach the scheduler (a few loop steps)
            if scheduler.stats().waiting[Priority.INTERACTIVE]:
                break
            await asyncio.sleep(0)
        # It waits for the slot: the provider has not been called for it.
        assert scheduler.stats().waiting[Priority.INTERACTIVE] == 1
        assert scripted(engine).started == 1
        first.cancel()
        done = await second.wait()
    assert isinstance(done, Done) and done.answer == "b"
    assert done.timings["scheduler_wait"] > 0
    assert scripted(engine).started == 2
