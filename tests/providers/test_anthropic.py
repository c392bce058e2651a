"""AnthropicProvider (the real SDK) against the loopback fake upstream."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

import pytest

from tests.support.chunks import collect, raises
from tests.support.server import free_port
from tests.support.upstream import Behavior, FakeUpstream, ToolCall
from tokenwire.config import AnthropicProviderSettings
from tokenwire.providers.anthropic import AnthropicProvider, messages
from tokenwire.providers.base import (
    Begin,
    Finish,
    GenerationRequest,
    Message,
    Provider,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    UsageChunk,
)
from tokenwire.providers.failures import FAILURES, FailureCode

from .tool_requests import FIRST, QUESTION, SYSTEM, TOOLS

GUARD_S = 10.0
KEY_ENV = "TOKENWIRE_TEST_ANTHROPIC_KEY"
REQUEST = GenerationRequest(
    messages=(
        Message("system", "be brief"),
        Message("user", "hi"),
        Message("assistant", "hello"),
        Message("system", "use English"),
        Message("user", "more"),
    ),
    max_tokens=64,
    temperature=0.5,
    stop=("END",),
)

MakeProvider = Callable[..., AnthropicProvider]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


@pytest.fixture
async def make_provider(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MakeProvider]:
    # Hermetic: the SDK must take nothing from the developer's environment.
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    made: list[AnthropicProvider] = []

    def make(base_url: str | None = None) -> AnthropicProvider:
        settings = AnthropicProviderSettings(
            base_url=base_url or upstream.anthropic_base_url,
            model="fake-claude",
            api_key_env=KEY_ENV,
        )
        provider = AnthropicProvider("claude", settings)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


async def test_it_is_a_provider(make_provider: MakeProvider) -> None:
    provider = make_provider()
    assert isinstance(provider, Provider)
    assert (provider.name, provider.kind, provider.model) == ("claude", "anthropic", "fake-claude")


async def test_text_stream(upstream: FakeUpstream, make_provider: MakeProvider) -> None:
    upstream.push(
        Behavior(tokens=["Hel", "lo\n\nevent: error\n", "", "!"], input_tokens=11, heartbeat=True)
    )
    chunks = await collect(make_provider().stream(REQUEST))
    assert chunks == [
        Begin(),
        TextChunk("Hel"),
        TextChunk("lo\n\nevent: error\n"),
        TextChunk("!"),
        UsageChunk(input_tokens=11, output_tokens=4),
        Finish("stop"),
    ]
    assert upstream.completed == 1


async def test_request_and_key(
    upstream: FakeUpstream, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-ant-test")
    await collect(make_provider().stream(REQUEST))
    seen = await upstream.wait_requests(1)
    assert seen.path == "/v1/messages"
    # The SDK version decides which header carries the key; one of them must.
    assert seen.headers.get("x-api-key") == "sk-ant-test" or (
        seen.headers.get("authorization") == "Bearer sk-ant-test"
    )
    assert "anthropic-version" in seen.headers
    assert seen.json["system"] == "be brief\n\nuse English"
    assert seen.json["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "more"},
    ]
    assert seen.json["stream"] is True
    assert (seen.json["model"], seen.json["max_tokens"]) == ("fake-claude", 64)
    assert (seen.json["temperature"], seen.json["stop_sequences"]) == (0.5, ["END"])


async def test_no_key_no_credentials(upstream: FakeUpstream, make_provider: MakeProvider) -> None:
    await collect(make_provider().stream(REQUEST))
    headers = (await upstream.wait_requests(1)).headers
    assert "x-api-key" not in headers and "authorization" not in headers


@pytest.mark.parametrize(
    ("vendor", "expected"),
    [
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
async def test_finish_reasons(
    upstream: FakeUpstream, make_provider: MakeProvider, vendor: str, expected: str
) -> None:
    upstream.push(Behavior(finish_reason=vendor))
    chunks = await collect(make_provider().stream(REQUEST))
    assert chunks[-1] == Finish(expected)  # type: ignore[arg-type]


async def test_tool_use_blocks(upstream: FakeUpstream, make_provider: MakeProvider) -> None:
    calls = [
        ToolCall(name="search", arguments=['{"q": ', '"tea"}'], call_id="toolu_a"),
        ToolCall(name="clock", arguments=["{}"], call_id="toolu_b"),
    ]
    upstream.push(Behavior(tokens=["Looking."], tool_calls=calls))
    chunks = await collect(make_provider().stream(REQUEST))
    assert chunks[:2] == [Begin(), TextChunk("Looking.")]
    # The text block is content block 0; tool calls still count from 0.
    assert [c for c in chunks if isinstance(c, ToolCallChunk)] == [
        ToolCallChunk(index=0, call_id="toolu_a", name="search"),
        ToolCallChunk(index=0, arguments_delta='{"q": '),
        ToolCallChunk(index=0, arguments_delta='"tea"}'),
        ToolCallChunk(index=1, call_id="toolu_b", name="clock"),
        ToolCallChunk(index=1, arguments_delta="{}"),
    ]
    assert chunks[-2:] == [UsageChunk(5, 1), Finish("tool_calls")]


@pytest.mark.parametrize(
    ("status", "error_type", "code", "retryable", "retry_after"),
    [
        (429, None, "upstream_rate_limited", True, 3.0),
        (500, None, "upstream_unavailable", True, None),
        (503, None, "upstream_unavailable", True, None),
        (529, "overloaded_error", "upstream_overloaded", True, 20.0),
        (400, None, "upstream_bad_request", False, None),
        (413, "request_too_large", "upstream_bad_request", False, None),
        (401, None, "upstream_auth", False, None),
        (403, "permission_error", "upstream_auth", False, None),
        (404, "not_found_error", "upstream_not_found", False, None),
        (402, "billing_error", "upstream_quota", False, None),
    ],
)
async def test_status_errors(
    upstream: FakeUpstream,
    make_provider: MakeProvider,
    caplog: pytest.LogCaptureFixture,
    status: int,
    error_type: str | None,
    code: str,
    retryable: bool,
    retry_after: float | None,
) -> None:
    header = None if retry_after is None else str(int(retry_after))
    upstream.push(
        Behavior(
            status=status,
            retry_after=header,
            error_type=error_type,
            error_message="vendor words, key sk-ant-api03-xyzw",
        )
    )
    seen, error = await raises(make_provider().stream(REQUEST))
    assert seen == []
    assert (error.code, error.retryable, error.status, error.retry_after) == (
        code,
        retryable,
        status,
        retry_after,
    )
    assert error.message == FAILURES[FailureCode(code)].message
    assert len(upstream.requests) == 1  # the SDK's own retries are off
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "tokenwire.providers")
    assert "vendor words, key [redacted]" in logged and "xyzw" not in logged
    assert f"status {status}" in logged and code in logged and "claude" in logged


@pytest.mark.parametrize("behavior", [Behavior(no_end_marker=True), Behavior(cut_after=2)])
async def test_truncated_stream_ends_without_finish(
    upstream: FakeUpstream, make_provider: MakeProvider, behavior: Behavior
) -> None:
    upstream.push(behavior)
    chunks = await collect(make_provider().stream(REQUEST))
    assert chunks[:3] == [Begin(), TextChunk("Hello"), TextChunk(",")]
    assert not any(isinstance(c, Finish | UsageChunk) for c in chunks)


@pytest.mark.parametrize(
    ("error_type", "code", "retryable"),
    [
        ("overloaded_error", "upstream_overloaded", True),
        ("rate_limit_error", "upstream_rate_limited", True),
        ("api_error", "upstream_unavailable", True),
        ("authentication_error", "upstream_auth", False),
        ("permission_error", "upstream_auth", False),
        ("invalid_request_error", "upstream_bad_request", False),
        ("not_found_error", "upstream_not_found", False),
        ("request_too_large", "upstream_bad_request", False),
        ("timeout_error", "upstream_timeout", True),
        ("billing_error", "upstream_quota", False),
    ],
)
async def test_error_event_mid_stream(
    upstream: FakeUpstream,
    make_provider: MakeProvider,
    caplog: pytest.LogCaptureFixture,
    error_type: str,
    code: str,
    retryable: bool,
) -> None:
    upstream.push(Behavior(error_event_after=1, error_type=error_type, error_message="Overloaded"))
    seen, error = await raises(make_provider().stream(REQUEST))
    assert seen == [Begin(), TextChunk("Hello")]
    assert (error.code, error.retryable) == (code, retryable)
    assert error.message == FAILURES[FailureCode(code)].message
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "tokenwire.providers")
    assert f"{error_type}: Overloaded" in logged


async def test_malformed_json_is_a_stream_error(
    upstream: FakeUpstream, make_provider: MakeProvider
) -> None:
    upstream.push(Behavior(malformed_after=1))
    seen, error = await raises(make_provider().stream(REQUEST))
    assert seen == [Begin(), TextChunk("Hello")]
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


async def test_connection_refused_is_a_retryable_connect_error(make_provider: MakeProvider) -> None:
    provider = make_provider(base_url=f"http://127.0.0.1:{free_port()}")
    seen, error = await raises(provider.stream(REQUEST))
    assert seen == []
    assert (error.code, error.retryable, error.status) == ("upstream_unavailable", True, None)


async def test_check(upstream: FakeUpstream, make_provider: MakeProvider) -> None:
    provider = make_provider()
    assert (await provider.check()).reachable
    assert (await upstream.wait_requests(1)).path == "/v1/models"
    upstream.push(Behavior(status=503))
    assert not (await provider.check()).reachable
    refused = make_provider(base_url=f"http://127.0.0.1:{free_port()}")
    assert not (await refused.check()).reachable


async def test_tool_use_blocks_assemble_from_input_json_deltas(
    upstream: FakeUpstream, make_provider: MakeProvider
) -> None:
    # As Anthropic streams them: the first input_json_delta is often empty, the JSON then comes
    # in small pieces; a call without arguments may stream no JSON at all.
    calls = [
        ToolCall(
            name="get_weather",
            arguments=["", '{"ci', 'ty": "', "Os", 'lo"', "}"],
            call_id="toolu_01Wx",
        ),
        ToolCall(name="current_time", arguments=[""], call_id="toolu_02Tm"),
        ToolCall(name="current_time", arguments=[], call_id="toolu_03Tm"),
    ]
    upstream.push(Behavior(tokens=["Checking", "."], tool_calls=calls, output_tokens=30))
    chunks = await collect(make_provider().stream(REQUEST))
    assert chunks[:3] == [Begin(), TextChunk("Checking"), TextChunk(".")]
    calls_seen: dict[int, list[str]] = {}
    for c in chunks:
        if isinstance(c, ToolCallChunk):
            entry = calls_seen.setdefault(c.index, [c.call_id or "", c.name or "", ""])
            entry[2] += c.arguments_delta
    assert calls_seen == {
        0: ["toolu_01Wx", "get_weather", '{"city": "Oslo"}'],
        1: ["toolu_02Tm", "current_time", "{}"],  # no JSON streamed: {}
        2: ["toolu_03Tm", "current_time", "{}"],
    }
    assert chunks[-2:] == [UsageChunk(5, 30), Finish("tool_calls")]


async def test_tools_tool_use_and_tool_results_in_the_request(
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
                "Let me look.",
                tool_calls=(
                    ToolCallRequest("toolu_01Wx", "get_weather", '{"city": "Oslo"}'),
                    ToolCallRequest("toolu_02Tm", "current_time", "not json"),
                ),
            ),
            Message("tool", '{"temp_c": 4}', tool_call_id="toolu_01Wx", name="get_weather"),
            Message("tool", "12:00", tool_call_id="toolu_02Tm", name="current_time"),
            Message("user", "Thanks, and in Celsius?"),
        ),
        max_tokens=64,
        tools=TOOLS,
        step=2,
    )
    await collect(provider.stream(follow_up))
    await collect(provider.stream(REQUEST))
    asked, answered, plain = (r.json for r in upstream.requests)
    tools = [
        {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": TOOLS[0].parameters,
        },
        {
            "name": "current_time",
            "description": "The current time.",
            "input_schema": {"type": "object", "properties": {}},
        },
    ]
    assert (asked["tools"], asked["tool_choice"]) == (tools, {"type": "any"})
    assert (answered["tools"], answered["tool_choice"]) == (tools, {"type": "auto"})
    assert asked["messages"] == [{"role": "user", "content": "Weather in Oslo, and the time?"}]
    assert answered["messages"] == [
        {"role": "user", "content": "Weather in Oslo, and the time?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_01Wx",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
                # Arguments that are not a JSON object go as an empty input.
                {"type": "tool_use", "id": "toolu_02Tm", "name": "current_time", "input": {}},
            ],
        },
        {
            # Both results and the next question: one user turn, the results first.
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01Wx", "content": '{"temp_c": 4}'},
                {"type": "tool_result", "tool_use_id": "toolu_02Tm", "content": "12:00"},
                {"type": "text", "text": "Thanks, and in Celsius?"},
            ],
        },
    ]
    roles = [m["role"] for m in answered["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))
    assert "tools" not in plain and "tool_choice" not in plain


def test_adjacent_messages_of_one_role_merge() -> None:
    sent = messages(
        [
            Message("user", "one"),
            Message("system", "ignored here"),
            Message("user", "two"),
            Message("assistant", "", tool_calls=(ToolCallRequest("t1", "current_time", "[1]"),)),
            Message("assistant", "after"),
            Message("tool", "noon", tool_call_id="t1", name="current_time"),
        ]
    )
    assert sent == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "t1", "name": "current_time", "input": {}},
                {"type": "text", "text": "after"},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "noon"}],
        },
    ]
