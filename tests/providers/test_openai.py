"""OpenAIProvider against the loopback fake upstream: chunks, end markers, errors, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tests.support.chunks import collect, raises, text
from tests.support.server import free_port
from tests.support.upstream import Behavior, FakeUpstream, ToolCall
from tokenwire.config import OpenAIProviderSettings
from tokenwire.providers.base import (
    Begin,
    Finish,
    GenerationRequest,
    Message,
    Provider,
    ProviderChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    UsageChunk,
)
from tokenwire.providers.failures import FAILURES, FailureCode
from tokenwire.providers.openai import OpenAIProvider, error_for_status, parse_retry_after

from .tool_requests import FIRST, QUESTION, SYSTEM, TOOLS

GUARD_S = 10.0
REQUEST = GenerationRequest(
    messages=(Message("system", "be brief"), Message("user", "hi")),
    max_tokens=64,
    temperature=0.2,
    stop=("\n\n",),
)

MakeProvider = Callable[..., OpenAIProvider]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


@pytest.fixture
async def make_provider(upstream: FakeUpstream) -> AsyncIterator[MakeProvider]:
    made: list[OpenAIProvider] = []

    def make(base_url: str | None = None, **settings: object) -> OpenAIProvider:
        config = OpenAIProviderSettings(
            base_url=base_url or upstream.openai_base_url,
            model="fake-model",
            api_key_env="TOKENWIRE_TEST_OPENAI_KEY",
            **settings,  # type: ignore[arg-type]
        )
        provider = OpenAIProvider("gpt", config)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


async def test_it_is_a_provider(make_provider: MakeProvider) -> None:
    provider = make_provider()
    assert isinstance(provider, Provider)
    assert (provider.name, provider.kind, provider.model) == ("gpt", "openai", "fake-model")


async def test_text_stream(upstream: FakeUpstream, make_provider: MakeProvider) -> None:
    tokens = ["Hel", "lo\n\ndata: [DONE]\n\n", "", " wörld"]
    upstream.push(Behavior(tokens=tokens, input_tokens=9, output_tokens=3, heartbeat=True))
    chunks = await collect(make_provider().stream(REQUEST))
    assert chunks == [
        Begin(),
        TextChunk("Hel"),
        TextChunk("lo\n\ndata: [DONE]\n\n"),
        TextChunk(" wörld"),  # the empty delta is skipped
        UsageChunk(input_tokens=9, output_tokens=3),
        Finish("stop"),
    ]
    assert upstream.completed == 1


async def test_request_body_and_headers(
    upstream: FakeUpstream, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENWIRE_TEST_OPENAI_KEY", "sk-test-123")
    await collect(make_provider(headers={"X-Extra": "yes"}).stream(REQUEST))
    seen = await upstream.wait_requests(1)
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-test-123"
    assert seen.headers["x-extra"] == "yes"
    assert seen.json == {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 64,
        "temperature": 0.2,
        "stop": ["\n\n"],
    }


async def test_no_key_no_authorization_header(
    upstream: FakeUpstream, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKENWIRE_TEST_OPENAI_KEY", raising=False)
    await collect(make_provider().stream(REQUEST))
    assert "authorization" not in (await upstream.wait_requests(1)).headers


@pytest.mark.parametrize(
    ("vendor", "expected"),
    [("length", "length"), ("content_filter", "content_filter"), ("function_call", "tool_calls")],
)
async def test_finish_reasons(
    upstream: FakeUpstream, make_provider: MakeProvider, vendor: str, expected: str
) -> None:
    upstream.push(Behavior(finish_reason=vendor))
    chunks = await collect(make_provider().stream(REQUEST))
    assert chunks[-1] == Finish(expected)  # type: ignore[arg-type]


async def test_tool_call_deltas(upstream: FakeUpstream, make_provider: MakeProvider) -> None:
    calls = [
        ToolCall(name="search", arguments=['{"q": ', '"tea"', "}"], call_id="call_a"),
        ToolCall(name="clock", arguments=["{}"], call_id="call_b"),
    ]
    upstream.push(Behavior(tokens=["Let me look."], tool_calls=calls))
    chunks = await collect(make_provider().stream(REQUEST))
    assert chunks[:2] == [Begin(), TextChunk("Let me look.")]
    assert [c for c in chunks if isinstance(c, ToolCallChunk)] == [
        ToolCallChunk(index=0, call_id="call_a", name="search"),
        ToolCallChunk(index=0, arguments_delta='{"q": '),
        ToolCallChunk(index=0, arguments_delta='"tea"'),
        ToolCallChunk(index=0, arguments_delta="}"),
        ToolCallChunk(index=1, call_id="call_b", name="clock"),
        ToolCallChunk(index=1, arguments_delta="{}"),
    ]
    assert chunks[-1] == Finish("tool_calls")


async def test_rate_limited_before_the_stream(
    upstream: FakeUpstream, make_provider: MakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.push(Behavior(status=429, retry_after="7", error_message="slow down"))
    seen, error = await raises(make_provider().stream(REQUEST))
    assert seen == []
    assert (error.code, error.retryable, error.status, error.retry_after) == (
        "upstream_rate_limited",
        True,
        429,
        7.0,
    )
    assert error.message == FAILURES[FailureCode.RATE_LIMITED].message
    # The upstream's words are the log's, with the provider, the status and the code.
    (record,) = [r for r in caplog.records if r.name == "tokenwire.providers"]
    assert record.levelname == "WARNING"
    logged = record.getMessage()
    assert "slow down" in logged and "gpt" in logged and "429" in logged
    assert "upstream_rate_limited" in logged


@pytest.mark.parametrize(
    ("status", "error_type", "code", "retryable"),
    [
        (500, None, "upstream_unavailable", True),
        (502, None, "upstream_unavailable", True),
        (503, None, "upstream_unavailable", True),
        (503, "overloaded_error", "upstream_overloaded", True),
        (529, None, "upstream_overloaded", True),
        (504, None, "upstream_timeout", True),
        (408, None, "upstream_timeout", True),
        (400, None, "upstream_bad_request", False),
        (422, None, "upstream_bad_request", False),
        (404, None, "upstream_not_found", False),
        (401, "invalid_request_error", "upstream_auth", False),
        (403, None, "upstream_auth", False),
        (429, "insufficient_quota", "upstream_quota", False),
    ],
)
async def test_status_errors(
    upstream: FakeUpstream,
    make_provider: MakeProvider,
    status: int,
    error_type: str | None,
    code: str,
    retryable: bool,
) -> None:
    upstream.push(
        Behavior(status=status, error_type=error_type, error_message=f"vendor says {status}")
    )
    seen, error = await raises(make_provider().stream(REQUEST))
    assert seen == []
    assert (error.code, error.retryable, error.status) == (code, retryable, status)
    assert error.message == FAILURES[FailureCode(code)].message
    assert "vendor says" not in error.message and f"vendor says {status}" in error.detail
    assert error.retry_after is None


async def test_a_key_hint_and_an_html_page_stay_out_of_the_error_and_the_key_out_of_the_log(
    upstream: FakeUpstream, make_provider: MakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.push(
        Behavior(status=401, error_message="Incorrect API key provided: sk-proj-…abcd."),
        Behavior(status=502, raw_body="<html><body><h1>502 Bad Gateway</h1></body></html>"),
    )
    _, auth = await raises(make_provider().stream(REQUEST))
    _, gateway = await raises(make_provider().stream(REQUEST))
    assert (auth.code, gateway.code) == ("upstream_auth", "upstream_unavailable")
    for error in (auth, gateway):
        assert "abcd" not in str(error) and "<html" not in str(error)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Incorrect API key provided: [redacted]" in logged and "abcd" not in logged
    assert "502 Bad Gateway" in logged


def test_status_table_and_retry_after() -> None:
    assert error_for_status("gpt", 529, "x").code == "upstream_overloaded"
    assert error_for_status("gpt", 409, "x").retryable
    assert error_for_status("gpt", 500, "x", "rate_limit_error").code == "upstream_rate_limited"
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "soon"}) is None
    date = parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert date == 0.0  # in the past


@pytest.mark.parametrize("behavior", [Behavior(no_end_marker=True), Behavior(cut_after=2)])
async def test_truncated_stream_ends_without_finish(
    upstream: FakeUpstream, make_provider: MakeProvider, behavior: Behavior
) -> None:
    upstream.push(behavior)
    chunks = await collect(make_provider().stream(REQUEST))
    assert chunks[0] == Begin()
    assert not any(isinstance(c, Finish) for c in chunks)
    assert text(chunks).startswith("Hello,")


@pytest.mark.parametrize(
    ("error_type", "code", "retryable"),
    [
        ("server_error", "upstream_unavailable", True),
        ("rate_limit_exceeded", "upstream_rate_limited", True),
        ("invalid_request_error", "upstream_bad_request", False),
        ("something_new", "upstream_error", False),
    ],
)
async def test_mid_stream_error_object(
    upstream: FakeUpstream,
    make_provider: MakeProvider,
    error_type: str,
    code: str,
    retryable: bool,
) -> None:
    upstream.push(Behavior(error_event_after=1, error_type=error_type, error_message="boom"))
    seen, error = await raises(make_provider().stream(REQUEST))
    assert seen == [Begin(), TextChunk("Hello")]
    assert (error.code, error.retryable) == (code, retryable)
    assert "boom" not in error.message and "boom" in error.detail


async def test_malformed_json_is_a_stream_error(
    upstream: FakeUpstream, make_provider: MakeProvider
) -> None:
    upstream.push(Behavior(malformed_after=2))
    seen, error = await raises(make_provider().stream(REQUEST))
    assert text(seen) == "Hello,"
    assert (error.code, error.retryable) == ("upstream_invalid", False)


async def test_aclose_mid_stream_closes_the_upstream_connection(
    upstream: FakeUpstream, make_provider: MakeProvider
) -> None:
    upstream.push(Behavior(hang_after=1))
    stream = make_provider().stream(REQUEST)
    async with asyncio.timeout(GUARD_S):
        assert await anext(stream) == Begin()
        assert await anext(stream) == TextChunk("Hello")
        await stream.aclose()  # type: ignore[attr-defined]
        await upstream.wait_client_disconnect()
    assert upstream.disconnects == 1


async def test_cancelling_the_consumer_closes_the_upstream_connection(
    upstream: FakeUpstream, make_provider: MakeProvider
) -> None:
    upstream.push(Behavior(hang_after=0))
    provider = make_provider()
    begun = asyncio.Event()

    async def consume() -> None:
        async for chunk in provider.stream(REQUEST):
            if isinstance(chunk, Begin):
                begun.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(GUARD_S):
        await begun.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await upstream.wait_client_disconnect()


async def test_the_pool_is_reused(upstream: FakeUpstream, make_provider: MakeProvider) -> None:
    provider = make_provider()
    for _ in range(3):
        assert (await collect(provider.stream(REQUEST)))[-1] == Finish("stop")
    # One client port for all three: the connection went back to the pool after [DONE].
    assert len({r.peer for r in upstream.requests}) == 1
    assert provider._session is not None and provider._session.connector is not None
    assert provider._session.connector.limit == 1000


async def test_connection_refused_is_a_retryable_connect_error(make_provider: MakeProvider) -> None:
    provider = make_provider(base_url=f"http://127.0.0.1:{free_port()}/v1")
    seen, error = await raises(provider.stream(REQUEST))
    assert seen == []
    assert (error.code, error.retryable, error.status) == ("upstream_unavailable", True, None)


async def test_check(upstream: FakeUpstream, make_provider: MakeProvider) -> None:
    provider = make_provider()
    assert (await provider.check()).reachable
    assert (await upstream.wait_requests(1)).path == "/v1/models"
    upstream.push(Behavior(status=503))
    assert not (await provider.check()).reachable
    refused = make_provider(base_url=f"http://127.0.0.1:{free_port()}/v1")
    assert not (await refused.check()).reachable


async def test_an_extraction_call_asks_for_structured_output(
    upstream: FakeUpstream, make_provider: MakeProvider
) -> None:
    import dataclasses

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    base = GenerationRequest(messages=(Message("user", "hi"),), max_tokens=10)
    provider = make_provider()
    await collect(provider.stream(dataclasses.replace(base, json_schema=schema)))
    await collect(provider.stream(base))
    with_schema, plain = upstream.requests
    assert with_schema.json["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "extraction", "schema": schema},
    }
    assert "response_format" not in plain.json


def assemble(chunks: list[ProviderChunk]) -> dict[int, tuple[str | None, str | None, str]]:
    """Tool-call chunks put together as the engine does: index → (call id, name, arguments)."""
    calls: dict[int, tuple[str | None, str | None, str]] = {}
    for c in chunks:
        if isinstance(c, ToolCallChunk):
            call_id, name, arguments = calls.get(c.index, (None, None, ""))
            calls[c.index] = (call_id or c.call_id, name or c.name, arguments + c.arguments_delta)
    return calls


async def test_interleaved_tool_calls_in_openai_delta_shape(
    upstream: FakeUpstream, make_provider: MakeProvider
) -> None:
    calls = [
        ToolCall(
            name="get_weather",
            arguments=['{"', "city", '":', ' "', "Os", "lo", '"}'],
            call_id="call_Wx1",
        ),
        ToolCall(name="current_time", arguments=["{", "}"], call_id="call_Tm2"),
    ]
    upstream.push(Behavior(tokens=[], tool_calls=calls, interleave_tool_calls=True, usage=True))
    chunks = await collect(make_provider().stream(REQUEST))
    pieces = [c for c in chunks if isinstance(c, ToolCallChunk)]
    # Interleaved as sent: both starts, then the argument pieces round-robin.
    assert [c.index for c in pieces][:6] == [0, 1, 0, 1, 0, 1]
    assert pieces[0] == ToolCallChunk(index=0, call_id="call_Wx1", name="get_weather")
    assert all(c.call_id is None and c.name is None for c in pieces[2:])
    assert assemble(chunks) == {
        0: ("call_Wx1", "get_weather", '{"city": "Oslo"}'),
        1: ("call_Tm2", "current_time", "{}"),
    }
    assert not any(isinstance(c, TextChunk) for c in chunks)
    assert chunks[-2:] == [UsageChunk(5, 0), Finish("tool_calls")]


async def test_tools_and_a_tool_loop_follow_up_in_the_request_body(
    upstream: FakeUpstream, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    await collect(provider.stream(FIRST))
    follow_up = GenerationRequest(
        messages=(
            SYSTEM,
            QUESTION,
            Message(
                "assistant",
                "",
                tool_calls=(
                    ToolCallRequest("call_Wx1", "get_weather", '{"city": "Oslo"}'),
                    ToolCallRequest("call_Tm2", "current_time", "{}"),
                ),
            ),
            Message("tool", '{"temp_c": 4}', tool_call_id="call_Wx1", name="get_weather"),
            Message("tool", '"12:00"', tool_call_id="call_Tm2", name="current_time"),
        ),
        max_tokens=64,
        tools=TOOLS,
        step=2,
    )
    await collect(provider.stream(follow_up))
    await collect(provider.stream(REQUEST))  # no tools: neither key
    asked, answered, plain = (r.json for r in upstream.requests)
    functions = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": TOOLS[0].parameters,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "current_time",
                "description": "The current time.",
                "parameters": {"type": "object", "properties": {}},
            },
        },
    ]
    assert (asked["tools"], asked["tool_choice"]) == (functions, "required")
    assert (answered["tools"], answered["tool_choice"]) == (functions, "auto")
    assert asked["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Weather in Oslo, and the time?"},
    ]
    assert answered["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_Wx1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
                {
                    "id": "call_Tm2",
                    "type": "function",
                    "function": {"name": "current_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_Wx1", "content": '{"temp_c": 4}'},
        {"role": "tool", "tool_call_id": "call_Tm2", "content": '"12:00"'},
    ]
    assert "tools" not in plain and "tool_choice" not in plain


async def test_an_assistant_message_with_text_and_calls_keeps_its_text(
    upstream: FakeUpstream, make_provider: MakeProvider
) -> None:
    call = ToolCallRequest("c1", "current_time", "{}")
    request = GenerationRequest(
        messages=(
            Message("user", "time?"),
            Message("assistant", "Let me check.", tool_calls=(call,)),
            Message("tool", "noon", tool_call_id="c1", name="current_time"),
        ),
        max_tokens=8,
    )
    await collect(make_provider().stream(request))
    sent = (await upstream.wait_requests(1)).json["messages"]
    assert sent[1]["content"] == "Let me check." and sent[1]["tool_calls"][0]["id"] == "c1"
    assert "tools" not in (await upstream.wait_requests(1)).json
