"""Upstream failures as every client sees them: a real server on loopback relaying to a loopback
upstream (OpenAI and Anthropic formats) that fails in each way real ones do. The native SSE
``error`` event, the WebSocket frame and the OpenAI-compatible answer (read with the official
``openai`` SDK) all carry tokenwire's code, ``retryable``, ``retry_after`` and tokenwire's
message; the upstream's own words (a key hint, a proxy's HTML page) reach only the server log,
redacted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import orjson
import pytest
import websockets

from tokenwire import Settings
from tokenwire.protocol import Done, Error, SSEDecoder, decode_event
from tokenwire.providers import FAILURES, FailureCode

from ..support.upstream import Behavior, FakeUpstream
from .conftest import Live, live_server

GUARD_S = 20.0
KEY_HINT = "sk-…abcd"
UPSTREAM_WORDS = f"Incorrect API key provided: {KEY_HINT}"
HTML_PAGE = "<html><head><title>502 Bad Gateway</title></head><body>nginx/1.25</body></html>"
LEAKS = (KEY_HINT, "Incorrect API key", "<html", "nginx")
"""What must never reach a client."""


@dataclass(frozen=True)
class Case:
    behavior: Behavior
    code: str
    retryable: bool
    retry_after: float | None
    http_status: int
    """The status an OpenAI SDK user sees."""
    logged: str
    """What the server log holds of the upstream's words."""
    routes: tuple[str, ...] = ("openai", "anthropic")
    deadlines: dict[str, float] | None = None


def words(status: int, **fields: Any) -> Behavior:
    return Behavior(status=status, error_message=UPSTREAM_WORDS, **fields)


REDACTED_WORDS = "Incorrect API key provided: [redacted]"

CASES = {
    "401-key-hint": Case(words(401), "upstream_auth", False, None, 502, REDACTED_WORDS),
    "502-html-page": Case(
        Behavior(status=502, raw_body=HTML_PAGE),
        "upstream_unavailable",
        True,
        None,
        502,
        "502 Bad Gateway",
    ),
    "429-retry-after": Case(
        words(429, retry_after="7"), "upstream_rate_limited", True, 7.0, 429, REDACTED_WORDS
    ),
    "529-overloaded": Case(
        words(529, error_type="overloaded_error", retry_after="3"),
        "upstream_overloaded",
        True,
        3.0,
        503,
        REDACTED_WORDS,
    ),
    "400": Case(words(400), "upstream_bad_request", False, None, 400, REDACTED_WORDS),
    "503": Case(words(503), "upstream_unavailable", True, None, 502, REDACTED_WORDS),
    "504": Case(words(504), "upstream_timeout", True, None, 504, REDACTED_WORDS),
    "truncated": Case(
        Behavior(tokens=(), no_end_marker=True), "upstream_truncated", True, None, 502, ""
    ),
    "first-token-timeout": Case(
        Behavior(hang_before_headers=True),
        "timeout_first_token",
        True,
        None,
        504,
        "",
        deadlines={"first_token_s": 0.2},
    ),
    **{
        f"event-{error_type}": Case(
            Behavior(error_event_after=0, error_type=error_type, error_message=UPSTREAM_WORDS),
            code,
            retryable,
            None,
            status,
            f"{error_type}: {REDACTED_WORDS}",
            routes=("anthropic",),
        )
        for error_type, code, retryable, status in [
            ("overloaded_error", "upstream_overloaded", True, 503),
            ("rate_limit_error", "upstream_rate_limited", True, 429),
            ("api_error", "upstream_unavailable", True, 502),
            ("authentication_error", "upstream_auth", False, 502),
            ("permission_error", "upstream_auth", False, 502),
            ("invalid_request_error", "upstream_bad_request", False, 400),
            ("not_found_error", "upstream_not_found", False, 502),
            ("request_too_large", "upstream_bad_request", False, 400),
        ]
    },
}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


@pytest.fixture
async def live(upstream: FakeUpstream) -> AsyncIterator[Live]:
    provider = {"model": "m", "api_key_env": None}
    config = Settings(
        providers={
            "oa": {"kind": "openai", "base_url": upstream.openai_base_url, **provider},
            "an": {"kind": "anthropic", "base_url": upstream.anthropic_base_url, **provider},
        },
        routes={"openai": {"providers": ["oa"]}, "anthropic": {"providers": ["an"]}},
        default_route="openai",
        retry={"attempts_per_provider": 1},
    )
    async with live_server(config) as server:
        yield server


def body(case: Case, route: str) -> dict[str, Any]:
    request: dict[str, Any] = {"prompt": "hi", "route": route}
    if case.deadlines:
        request["deadlines"] = case.deadlines
    return request


def assert_tokenwire_error(error: Error, case: Case) -> None:
    assert (error.code, error.retryable, error.retry_after_s) == (
        case.code,
        case.retryable,
        case.retry_after,
    )
    try:
        expected = FAILURES[FailureCode(case.code)].message
    except ValueError:  # one of tokenwire's own endings (a deadline): its own words
        expected = error.message
    assert error.message == expected


def assert_no_leak(received: bytes | str) -> None:
    text = received.decode() if isinstance(received, bytes) else received
    for leak in LEAKS:
        assert leak not in text, leak


def assert_logged(caplog: pytest.LogCaptureFixture, case: Case) -> None:
    logged = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("tokenwire.providers")
    )
    assert KEY_HINT not in logged
    if case.logged:
        assert case.logged in logged
    for record in caplog.records:
        assert record.exc_info is None or record.levelno < logging.ERROR, record.getMessage()


async def sse_error(live: Live, case: Case, route: str) -> tuple[Error, bytes]:
    async with asyncio.timeout(GUARD_S):
        async with live.client.stream("POST", "/v1/streams", json=body(case, route)) as response:
            raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    events = [decode_event(m.data) for m in SSEDecoder().feed(raw)]
    terminal = events[-1]
    assert isinstance(terminal, Error), terminal
    assert [e.type for e in events].count("error") == 1
    return terminal, raw


async def ws_error(live: Live, case: Case, route: str) -> tuple[Error, str]:
    frames: list[str] = []
    url = live.url.replace("http://", "ws://") + "/v1/ws"
    async with asyncio.timeout(GUARD_S), websockets.connect(url) as ws:
        command = {"type": "generate", "request_id": "r1", **body(case, route)}
        await ws.send(orjson.dumps(command).decode())
        while True:
            frame = await ws.recv()
            assert isinstance(frame, str)
            frames.append(frame)
            parsed = orjson.loads(frame)
            if parsed["type"] in ("done", "error"):
                break
    assert parsed.pop("request_id") == "r1"
    terminal = decode_event(parsed)
    assert isinstance(terminal, Error), terminal
    return terminal, "\n".join(frames)


async def ai_sdk_error(live: Live, case: Case, route: str) -> tuple[list[Any], bytes]:
    """The UI message chunks of the AI SDK endpoint's answer (``data: [DONE]`` left out)."""
    request = {
        "id": "chat-1",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        "trigger": "submit-message",
        **body(case, route),
    }
    del request["prompt"]
    async with asyncio.timeout(GUARD_S):
        async with live.client.stream("POST", "/v1/ai-sdk/chat", json=request) as response:
            raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    chunks = [orjson.loads(m.data) for m in SSEDecoder().feed(raw) if m.data != "[DONE]"]
    return chunks, raw


async def sdk_error(live: Live, case: Case, route: str, *, stream: bool) -> openai.APIStatusError:
    extra = {"tokenwire": {"deadlines": case.deadlines}} if case.deadlines else None
    client = openai.AsyncOpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    try:
        async with asyncio.timeout(GUARD_S):
            with pytest.raises(openai.APIStatusError) as info:
                await client.chat.completions.create(
                    model=route,
                    messages=[{"role": "user", "content": "hi"}],
                    stream=stream,
                    extra_body=extra,
                )
    finally:
        await client.close()
    return info.value


CASE_ROUTES = [
    pytest.param(case, route, id=f"{name}-{route}")
    for name, case in CASES.items()
    for route in case.routes
]


@pytest.mark.parametrize(("case", "route"), CASE_ROUTES)
async def test_every_client_gets_tokenwires_code_and_words_and_the_log_gets_the_upstreams(
    live: Live,
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    case: Case,
    route: str,
) -> None:
    caplog.set_level(logging.WARNING)
    upstream.default = case.behavior

    sse, raw = await sse_error(live, case, route)
    assert_tokenwire_error(sse, case)
    assert_no_leak(raw)

    frame, frames = await ws_error(live, case, route)
    assert_tokenwire_error(frame, case)
    assert_no_leak(frames)

    chunks, raw = await ai_sdk_error(live, case, route)
    (part,) = [c for c in chunks if c["type"] == "error"]
    assert part["errorText"].startswith(f"{case.code}: ")
    metadata = chunks[-1]["messageMetadata"]
    assert (metadata["reason"], metadata["retryable"]) == (case.code, case.retryable)
    assert metadata.get("retryAfter") == case.retry_after
    assert_no_leak(raw)

    for stream in (False, True):
        error = await sdk_error(live, case, route, stream=stream)
        assert error.status_code == case.http_status
        assert error.code == case.code
        assert isinstance(error.body, dict)
        assert error.body["tokenwire"]["retryable"] is case.retryable
        assert error.body["tokenwire"]["retry_after_s"] == case.retry_after
        headers = error.response.headers
        # The SDK retries exactly what is retryable, after the upstream's pause.
        assert headers["x-should-retry"] == ("true" if case.retryable else "false")
        if case.retry_after is not None:
            assert headers["retry-after"] == str(int(case.retry_after))
        assert_no_leak(error.response.text)
        assert_no_leak(str(error))

    assert_logged(caplog, case)


@pytest.mark.parametrize("route", ["openai", "anthropic"])
async def test_a_failure_after_text_ends_partial_without_the_upstreams_words(
    live: Live, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture, route: str
) -> None:
    caplog.set_level(logging.WARNING)
    upstream.default = Behavior(
        tokens=["Hel", "lo"], error_event_after=1, error_message=UPSTREAM_WORDS
    )
    async with asyncio.timeout(GUARD_S):
        async with live.client.stream(
            "POST", "/v1/streams", json={"prompt": "hi", "route": route}
        ) as response:
            raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    terminal = [decode_event(m.data) for m in SSEDecoder().feed(raw)][-1]
    assert isinstance(terminal, Done) and terminal.partial and terminal.answer == "Hel"
    assert_no_leak(raw)
    client = openai.AsyncOpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model=route, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError) as info:
            async for _ in stream:
                pass
    finally:
        await client.close()
    assert_no_leak(str(info.value))
    assert_no_leak(orjson.dumps(info.value.body))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert REDACTED_WORDS in logged and KEY_HINT not in logged
