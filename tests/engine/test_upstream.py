"""The engine against real HTTP upstreams on loopback: cancel and every deadline must close the
upstream connection (the fake upstream awaits seeing it close), and vendor failures map to the
right terminal event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tokenwire import Done, Engine, Error, Reason, Settings, TextDelta

from ..support.upstream import Behavior, FakeUpstream
from .test_turn import check_invariants


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


def relay_settings(up: FakeUpstream, kind: str = "openai", **overrides: Any) -> Settings:
    base_url = up.openai_base_url if kind == "openai" else up.anthropic_base_url
    base: dict[str, Any] = {
        "providers": {
            "up": {"kind": kind, "base_url": base_url, "model": "m", "api_key_env": None}
        },
        "routes": {"default": {"providers": ["up"]}},
        "retry": {"attempts_per_provider": 2, "backoff_initial_s": 0.001},
    }
    base.update(overrides)
    return Settings(**base)


KINDS = ["openai", "anthropic"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_relayed_turn_completes(upstream: FakeUpstream, kind: str) -> None:
    async with Engine(relay_settings(upstream, kind)) as engine:
        events = [e async for e in (await engine.submit({"prompt": "hi"})).events()]
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.STOP
    assert done.answer == "Hello, world!" and done.usage is not None
    assert done.usage["estimated"] is False


@pytest.mark.parametrize("kind", KINDS)
async def test_cancel_closes_the_upstream_connection(upstream: FakeUpstream, kind: str) -> None:
    upstream.push(Behavior(tokens=["a", "b"], hang_after=1))
    async with Engine(relay_settings(upstream, kind)) as engine:
        handle = await engine.submit({"prompt": "hi"})
        async for event in handle.events():
            if isinstance(event, TextDelta):
                handle.cancel()
        async with asyncio.timeout(10):
            await upstream.wait_client_disconnect()
    terminal = handle.terminal
    assert isinstance(terminal, Done) and terminal.reason is Reason.CANCELLED
    assert terminal.answer == "a" and terminal.partial


@pytest.mark.parametrize(
    ("behavior", "deadlines", "reason"),
    [
        (Behavior(hang_before_headers=True), {"first_token_s": 0.2}, "timeout_first_token"),
        (Behavior(tokens=["a"], hang_after=0), {"first_token_s": 0.2}, "timeout_first_token"),
        (Behavior(tokens=["a", "b"], hang_after=1), {"idle_s": 0.2}, "timeout_idle"),
        (Behavior(tokens=["t"] * 10_000, delay_s=0.002), {"total_s": 0.3}, "timeout_total"),
    ],
    ids=["no-headers", "no-first-token", "idle", "total"],
)
async def test_each_deadline_closes_the_upstream_connection(
    upstream: FakeUpstream, behavior: Behavior, deadlines: dict[str, float], reason: str
) -> None:
    upstream.push(behavior)
    async with Engine(relay_settings(upstream)) as engine:
        events = [
            e
            async for e in (await engine.submit({"prompt": "hi", "deadlines": deadlines})).events()
        ]
        async with asyncio.timeout(10):
            await upstream.wait_client_disconnect()
    terminal = check_invariants(events)
    got = terminal.reason.value if isinstance(terminal, Done) else terminal.code
    assert got == reason
    assert len(upstream.requests) == 1  # a deadline is the turn's: never retried


async def test_keepalives_do_not_count_against_the_idle_deadline(upstream: FakeUpstream) -> None:
    # Heartbeats arrive every content frame but the content itself never comes: the idle
    # deadline must fire even though bytes keep flowing.
    upstream.push(Behavior(tokens=["a", "b"], heartbeat=True, hang_after=1))
    async with Engine(relay_settings(upstream)) as engine:
        events = [
            e
            async for e in (
                await engine.submit({"prompt": "hi", "deadlines": {"idle_s": 0.2}})
            ).events()
        ]
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.TIMEOUT_IDLE


@pytest.mark.parametrize("kind", KINDS)
async def test_rate_limit_before_the_stream_is_retried(upstream: FakeUpstream, kind: str) -> None:
    upstream.push(Behavior(status=429, retry_after="0"), Behavior(tokens=["ok"]))
    async with Engine(relay_settings(upstream, kind)) as engine:
        events = [e async for e in (await engine.submit({"prompt": "hi"})).events()]
    done = check_invariants(events)
    assert isinstance(done, Done) and done.answer == "ok" and done.attempts == 2
    # Nothing of the failed attempt reached the stream.
    assert [e.type for e in events].count("start") == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_server_errors_exhaust_retries_into_one_error(
    upstream: FakeUpstream, kind: str
) -> None:
    upstream.push(Behavior(status=500), Behavior(status=503))
    async with Engine(relay_settings(upstream, kind)) as engine:
        events = [e async for e in (await engine.submit({"prompt": "hi"})).events()]
    error = check_invariants(events)
    assert isinstance(error, Error) and error.code == "upstream_unavailable" and error.retryable
    assert error.attempts == 2 and len(upstream.requests) == 2


async def test_auth_failure_is_not_retried(upstream: FakeUpstream) -> None:
    upstream.push(Behavior(status=401))
    async with Engine(relay_settings(upstream)) as engine:
        events = [e async for e in (await engine.submit({"prompt": "hi"})).events()]
    error = check_invariants(events)
    assert isinstance(error, Error) and not error.retryable and len(upstream.requests) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_cut_after_text_is_truncated_not_completed(
    upstream: FakeUpstream, kind: str
) -> None:
    upstream.push(Behavior(tokens=["a", "b", "c"], cut_after=2))
    async with Engine(relay_settings(upstream, kind)) as engine:
        events = [e async for e in (await engine.submit({"prompt": "hi"})).events()]
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.UPSTREAM_TRUNCATED
    assert done.partial and done.status == "incomplete" and done.answer == "ab"


@pytest.mark.parametrize("kind", KINDS)
async def test_missing_end_marker_is_truncated(upstream: FakeUpstream, kind: str) -> None:
    upstream.push(Behavior(tokens=["a"], no_end_marker=True))
    async with Engine(relay_settings(upstream, kind)) as engine:
        events = [e async for e in (await engine.submit({"prompt": "hi"})).events()]
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.UPSTREAM_TRUNCATED


@pytest.mark.parametrize("kind", KINDS)
async def test_an_error_in_the_middle_of_a_stream_is_partial(
    upstream: FakeUpstream, kind: str
) -> None:
    upstream.push(Behavior(tokens=["a", "b"], error_event_after=1))
    async with Engine(relay_settings(upstream, kind)) as engine:
        events = [e async for e in (await engine.submit({"prompt": "hi"})).events()]
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason is Reason.UPSTREAM_ERROR and done.answer == "a"
    assert len(upstream.requests) == 1


async def test_fallback_to_the_next_provider_before_the_first_token() -> None:
    async with FakeUpstream() as broken, FakeUpstream() as healthy:
        broken.push(Behavior(status=500), Behavior(status=500))
        healthy.push(Behavior(tokens=["from", " backup"]))
        settings = Settings(
            providers={
                "a": {
                    "kind": "openai",
                    "base_url": broken.openai_base_url,
                    "model": "a",
                    "api_key_env": None,
                },
                "b": {
                    "kind": "anthropic",
                    "base_url": healthy.anthropic_base_url,
                    "model": "b",
                    "api_key_env": None,
                },
            },
            routes={"default": {"providers": ["a", "b"]}},
            retry={"attempts_per_provider": 2, "backoff_initial_s": 0.001},
        )
        async with Engine(settings) as engine:
            events = [e async for e in (await engine.submit({"prompt": "hi"})).events()]
    done = check_invariants(events)
    assert isinstance(done, Done) and done.answer == "from backup"
    assert done.model == "b" and done.attempts == 3


async def test_tool_call_deltas_from_an_openai_upstream(upstream: FakeUpstream) -> None:
    from ..support.upstream import ToolCall

    upstream.push(
        Behavior(
            tokens=[],
            tool_calls=[
                ToolCall(name="weather", arguments=['{"city"', ': "Oslo"}'], call_id="c1"),
                ToolCall(name="time", arguments=["{}"], call_id="c2"),
            ],
        )
    )
    async with Engine(relay_settings(upstream)) as engine:
        events = [e async for e in (await engine.submit({"prompt": "hi"})).events()]
    check_invariants(events)
    calls = [(e.call_id, e.name, e.arguments) for e in events if e.type == "tool.call"]  # type: ignore[union-attr]
    assert calls == [("c1", "weather", '{"city": "Oslo"}'), ("c2", "time", "{}")]


async def test_retry_after_is_honoured_then_a_long_one_falls_back() -> None:
    async with FakeUpstream() as first, FakeUpstream() as second:
        # Asks for a pause longer than backoff_max_s: no second try here, fall back at once.
        first.push(Behavior(status=429, retry_after="3600"))
        second.push(Behavior(status=429, retry_after="0.05"), Behavior(tokens=["ok"]))
        settings = Settings(
            providers={
                "a": {"kind": "openai", "base_url": first.openai_base_url, "api_key_env": None},
                "b": {"kind": "openai", "base_url": second.openai_base_url, "api_key_env": None},
            },
            routes={"default": {"providers": ["a", "b"]}},
            retry={"attempts_per_provider": 2, "backoff_initial_s": 0.001, "backoff_max_s": 1},
        )
        async with Engine(settings) as engine:
            events = [e async for e in (await engine.submit({"prompt": "hi"})).events()]
    done = check_invariants(events)
    assert isinstance(done, Done) and done.answer == "ok" and done.attempts == 3
    assert len(first.requests) == 1 and len(second.requests) == 2
