"""The AI SDK UI message stream endpoint (``POST /v1/ai-sdk/chat``).

Three layers: the event → chunk translation and the body translation, pure (no loop, no
server); the endpoint over real HTTP (disconnects, reconnects, refusals, auth); and the real
``ai`` npm package reading real turns in Node (``tests/js/read_stream.mjs``): its own transport
builds the request and parses the response, its own ``readUIMessageStream`` / ``AbstractChat``
assemble the message a ``useChat`` frontend would show. The Node tests run against the latest
``ai`` 5.x and against 5.0.0, whose chunk schema is strict (an unknown key fails the stream).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tokenwire import RequestError
from tokenwire.auth import generate_key, hash_key
from tokenwire.bus import UnknownStream
from tokenwire.protocol import (
    Done,
    Error,
    Event,
    Phase,
    Reason,
    SSEDecoder,
    Start,
    Status,
    StructuredDone,
    StructuredError,
    StructuredPartial,
    TextDelta,
    TextDone,
    ToolCall,
    ToolResult,
    Usage,
    encode_sse_comment,
    encode_sse_event,
)
from tokenwire.server.aisdk_parts import (
    DONE_FRAME,
    UIMessageTranscoder,
    UIMessageTranslator,
    source_chunks,
)
from tokenwire.server.aisdk_request import chat_turn

from .conftest import Live, live_server, settings

SID = "tw_0123456789abcdef0123456789abcdef"
MOOD = {"type": "object", "properties": {"mood": {"type": "string"}}, "required": ["mood"]}
JS_DIR = Path(__file__).resolve().parents[1] / "js"
KEY_A, KEY_A2, KEY_B = generate_key(), generate_key(), generate_key()


def numbered(*events: Event) -> list[Event]:
    """Events as the lifecycle stamps them (stream id, seq from 1)."""
    return [
        dataclasses.replace(e, stream_id=SID, seq=i)  # type: ignore[type-var]
        for i, e in enumerate(events, 1)
    ]


def translate(*events: Event, message_id: str | None = None) -> list[dict[str, Any]]:
    translator = UIMessageTranslator(message_id=message_id)
    return [chunk for event in numbered(*events) for chunk in translator.feed(event)]


def start() -> Start:
    return Start(model="m", route="default", created_at=1.0)


def done(reason: Reason = Reason.STOP, **fields: Any) -> Done:
    return Done(
        answer=fields.pop("answer", "Hi there"),
        status="completed" if reason is Reason.STOP else "incomplete",
        partial=reason.is_partial,
        reason=reason,
        model="m",
        route="default",
        attempts=1,
        **fields,
    )


def types(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["type"] for c in chunks]


# -- the translation, pure ------------------------------------------------------------------


def test_a_completed_turn_is_the_sdk_chunks_in_order() -> None:
    chunks = translate(
        start(),
        Status(phase=Phase.GENERATING),
        TextDelta(delta="Hi"),
        TextDelta(delta=" there"),
        TextDone(text="Hi there"),
        Status(phase=Phase.EXTRACTING),
        StructuredPartial(data={"mood": "ca"}),
        StructuredDone(data={"mood": "calm"}, schema="mood"),
        Usage(input_tokens=3, output_tokens=2),
        done(usage={"input_tokens": 3, "output_tokens": 2, "estimated": False}),
    )
    assert chunks == [
        {
            "type": "start",
            "messageId": SID,
            "messageMetadata": {"streamId": SID, "route": "default", "model": "m"},
        },
        {"type": "start-step"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Hi"},
        {"type": "text-delta", "id": "text-1", "delta": " there"},
        {"type": "text-end", "id": "text-1"},
        {
            "type": "data-structured",
            "id": "structured",
            "data": {"state": "streaming", "object": {"mood": "ca"}},
        },
        {
            "type": "data-structured",
            "id": "structured",
            "data": {"state": "done", "object": {"mood": "calm"}, "schema": "mood", "valid": True},
        },
        {"type": "finish-step"},
        {
            "type": "finish",
            "messageMetadata": {
                "finishReason": "stop",
                "reason": "stop",
                "status": "completed",
                "partial": False,
                "model": "m",
                "attempts": 1,
                "usage": {
                    "inputTokens": 3,
                    "outputTokens": 2,
                    "totalTokens": 5,
                    "estimated": False,
                },
            },
        },
    ]


def test_the_message_id_and_conversation_travel_in_start() -> None:
    event = Start(model="m", route="r", created_at=1.0, conversation_id="c1")
    [first, _] = translate(event, message_id="msg-7")
    assert first["messageId"] == "msg-7"
    assert first["messageMetadata"] == {
        "streamId": SID,
        "route": "r",
        "model": "m",
        "conversationId": "c1",
    }


def test_sources_become_source_parts() -> None:
    chunks = translate(
        start(),
        TextDelta(delta="x"),
        TextDone(text="x"),
        done(
            sources=["https://a.example/page", "doc-1", "https://a.example/page", "kb-9"],
            source_details=[
                {"url": "https://a.example/page", "title": "Page A"},
                {
                    "id": "doc-1",
                    "title": "Handbook",
                    "media_type": "application/pdf",
                    "filename": "handbook.pdf",
                },
                {"id": "kb-9", "url": "https://kb.example/9"},
                {"url": "https://b.example/", "title": "Only in the details"},
            ],
        ),
    )
    sources = [c for c in chunks if c["type"].startswith("source-")]
    assert sources == [
        {
            "type": "source-url",
            "sourceId": "https://a.example/page",
            "url": "https://a.example/page",
            "title": "Page A",
        },
        {
            "type": "source-document",
            "sourceId": "doc-1",
            "mediaType": "application/pdf",
            "title": "Handbook",
            "filename": "handbook.pdf",
        },
        {"type": "source-url", "sourceId": "kb-9", "url": "https://kb.example/9"},
        {
            "type": "source-url",
            "sourceId": "https://b.example/",
            "url": "https://b.example/",
            "title": "Only in the details",
        },
    ]
    # Sources belong to the finished answer: after its text, before the finish.
    assert types(chunks)[-4:] == ["source-url", "source-url", "finish-step", "finish"]
    assert source_chunks(["plain-id"]) == [
        {
            "type": "source-document",
            "sourceId": "plain-id",
            "mediaType": "text/plain",
            "title": "plain-id",
        }
    ]


@pytest.mark.parametrize(
    ("reason", "finish_reason"),
    [
        (Reason.CANCELLED, "other"),
        (Reason.SHUTDOWN, "other"),
        (Reason.TIMEOUT_IDLE, "error"),
        (Reason.TIMEOUT_TOTAL, "error"),
        (Reason.UPSTREAM_ERROR, "error"),
        (Reason.UPSTREAM_TRUNCATED, "error"),
    ],
)
def test_a_partial_answer_sends_an_error_before_its_finish(
    reason: Reason, finish_reason: str
) -> None:
    chunks = translate(start(), TextDelta(delta="Hal"), done(reason, answer="Hal"))
    assert types(chunks) == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",  # the text a partial done leaves open is closed before the error
        "error",
        "finish-step",
        "finish",
    ]
    assert chunks[5]["errorText"].startswith(f"{reason.value}: the answer is incomplete (")
    metadata = chunks[-1]["messageMetadata"]
    assert metadata["partial"] is True and metadata["status"] == "incomplete"
    assert metadata["reason"] == reason.value and metadata["finishReason"] == finish_reason


def test_a_cancel_before_any_text_is_still_an_error() -> None:
    chunks = translate(start(), done(Reason.CANCELLED, answer=""))
    assert types(chunks) == ["start", "start-step", "error", "finish-step", "finish"]


@pytest.mark.parametrize(
    ("reason", "finish_reason"),
    [(Reason.LENGTH, "length"), (Reason.CONTENT_FILTER, "content-filter")],
)
def test_the_models_own_endings_are_not_errors(reason: Reason, finish_reason: str) -> None:
    chunks = translate(start(), TextDelta(delta="a"), TextDone(text="a"), done(reason))
    assert "error" not in types(chunks)
    assert chunks[-1]["messageMetadata"]["finishReason"] == finish_reason


def test_a_failed_turn_is_an_error_then_finish() -> None:
    chunks = translate(
        start(),
        Error(code="upstream_error", message="provider error: 503", retryable=True, attempts=2),
    )
    assert chunks[2:] == [
        {"type": "error", "errorText": "upstream_error: provider error: 503"},
        {"type": "finish-step"},
        {
            "type": "finish",
            "messageMetadata": {
                "finishReason": "error",
                "reason": "upstream_error",
                "status": "failed",
                "retryable": True,
                "attempts": 2,
            },
        },
    ]


def test_a_structured_object_left_streaming_is_settled_as_an_error() -> None:
    chunks = translate(
        start(),
        TextDelta(delta="a"),
        TextDone(text="a"),
        StructuredPartial(data={"mood": "c"}),
        done(Reason.CANCELLED, structured={"status": "cancelled"}),
    )
    structured = [c["data"] for c in chunks if c["type"] == "data-structured"]
    assert structured[-1] == {
        "state": "error",
        "object": None,
        "error": {
            "code": "cancelled",
            "message": "the turn ended before the structured object did",
        },
    }
    # ...and a structured error is the part's final state, not the turn's failure.
    chunks = translate(
        start(),
        TextDelta(delta="a"),
        TextDone(text="a"),
        StructuredError(code="json_invalid", message="not JSON"),
        done(structured={"status": "error"}),
    )
    assert "error" not in types(chunks)
    [part] = [c for c in chunks if c["type"] == "data-structured"]
    assert part["data"]["error"] == {"code": "json_invalid", "message": "not JSON"}


def test_a_structured_reset_empties_the_part_for_the_next_attempt() -> None:
    from tokenwire.protocol import StructuredReset

    chunks = translate(
        start(),
        TextDelta(delta="a"),
        TextDone(text="a"),
        StructuredPartial(data={"mood": "hap"}),
        StructuredReset(attempt=2, code="schema_invalid"),
        StructuredPartial(data={"mood": "ca"}),
        StructuredDone(data={"mood": "calm"}),
        done(),
    )
    parts = [c["data"] for c in chunks if c["type"] == "data-structured"]
    assert parts[1] == {"state": "streaming", "object": None, "attempt": 2}
    assert [p["object"] for p in parts] == [{"mood": "hap"}, None, {"mood": "ca"}, {"mood": "calm"}]
    assert all(c["id"] == "structured" for c in chunks if c["type"] == "data-structured")


def test_tool_calls_are_dynamic_tool_parts() -> None:
    chunks = translate(
        start(),
        ToolCall(call_id="c1", name="lookup", arguments='{"q": "x"}'),
        ToolCall(call_id="c2", name="raw", arguments="not json"),
        ToolResult(call_id="c1", ok=True, summary="found"),
        ToolResult(call_id="c2", ok=False, summary="boom"),
        ToolResult(call_id="unknown", ok=True, summary="dropped"),
        TextDone(text=""),
        done(answer=""),
    )
    assert chunks[2:6] == [
        {
            "type": "tool-input-available",
            "toolCallId": "c1",
            "toolName": "lookup",
            "input": {"q": "x"},
            "dynamic": True,
        },
        {
            "type": "tool-input-available",
            "toolCallId": "c2",
            "toolName": "raw",
            "input": "not json",
            "dynamic": True,
        },
        {"type": "tool-output-available", "toolCallId": "c1", "output": "found", "dynamic": True},
        {"type": "tool-output-error", "toolCallId": "c2", "errorText": "boom", "dynamic": True},
    ]
    # tokenwire ran both tools (a route with tools): nothing is left for the client to run.
    assert chunks[-1]["messageMetadata"]["finishReason"] == "stop"


def test_calls_without_results_are_left_to_the_client() -> None:
    chunks = translate(
        start(),
        ToolCall(call_id="c1", name="lookup", arguments='{"q": "x"}'),
        TextDone(text=""),
        done(answer=""),
    )
    assert chunks[-1]["messageMetadata"]["finishReason"] == "tool-calls"


def test_nothing_follows_the_terminal_event() -> None:
    translator = UIMessageTranslator()
    for event in numbered(start(), done()):
        translator.feed(event)
    assert translator.finished
    with pytest.raises(ValueError, match="after the terminal event"):
        translator.feed(TextDelta(delta="late"))


def test_the_transcoder_takes_bytes_split_anywhere() -> None:
    events = numbered(start(), TextDelta(delta="a\n\ndata: [DONE]\n\n"), TextDone(text="x"), done())
    wire = b"".join(encode_sse_event(e) for e in events)
    expected = UIMessageTranscoder(UIMessageTranslator()).feed(wire)
    assert expected.endswith(b"}\n\n" + DONE_FRAME)
    assert expected.count(DONE_FRAME) == 1  # the text's lookalike is escaped JSON
    for cut in range(1, len(wire)):
        transcoder = UIMessageTranscoder(UIMessageTranslator())
        assert transcoder.feed(wire[:cut]) + transcoder.feed(wire[cut:]) == expected
    frames = [f for f in expected.split(b"\n\n") if f]
    assert all(f.startswith(b"data: ") and b"\n" not in f for f in frames)
    decoded = [json.loads(f.removeprefix(b"data: ")) for f in frames[:-1]]
    assert decoded == translate(*events)


def test_the_transcoder_keeps_heartbeats_and_drops_silent_events() -> None:
    transcoder = UIMessageTranscoder(UIMessageTranslator())
    [first, status] = numbered(start(), Status(phase=Phase.QUEUED))
    assert transcoder.feed(encode_sse_event(first)).startswith(b'data: {"type":"start"')
    assert transcoder.feed(encode_sse_event(status)) == b""
    assert transcoder.feed(encode_sse_comment("keep-alive")) == b": keep-alive\n\n"


# -- the request, pure ----------------------------------------------------------------------


def ui(role: str, *texts: str, id: str | None = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "text": t} for t in texts]}
    if id is not None:
        message["id"] = id
    return {**message, **extra}


def test_the_transports_body_becomes_a_turn() -> None:
    body = {
        "id": "chat-1",
        "messages": [
            ui("system", "Be brief.", id="s"),
            ui("user", "Hi", id="u1", metadata={"client": "side"}),
            {
                "id": "a1",
                "role": "assistant",
                "parts": [
                    {"type": "step-start"},
                    {"type": "reasoning", "text": "hmm"},
                    {"type": "text", "text": "Hello!", "state": "done"},
                    {"type": "data-structured", "id": "structured", "data": {}},
                    {"type": "source-url", "sourceId": "x", "url": "https://x.example"},
                    {"type": "dynamic-tool", "toolName": "t", "toolCallId": "c"},
                ],
            },
            ui("user", "Two", "parts", id="u2"),
        ],
        "trigger": "submit-message",
        "route": "default",
        "extraction": {"schema": MOOD},
        "deadlines": {"idle_s": 5},
    }
    turn = chat_turn(body)
    assert turn.chat_id == "chat-1" and turn.message_id is None
    assert turn.request == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Two\n\nparts"},
        ],
        "route": "default",
        "extraction": {"schema": MOOD},
        "deadlines": {"idle_s": 5},
    }


def test_a_conversation_sends_only_what_is_new() -> None:
    body = {
        "messages": [
            ui("system", "Be brief."),
            ui("user", "Hi"),
            ui("assistant", "Hello!"),
            ui("user", "More"),
        ],
        "conversation_id": "c1",
    }
    assert chat_turn(body).request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "More"},
    ]


def test_an_answer_continuing_an_assistant_message_keeps_its_id() -> None:
    body = {"messages": [ui("user", "Hi", id="u"), ui("assistant", "Hel", id="a-1")]}
    assert chat_turn(body).message_id == "a-1"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"messages": [ui("user", "x")], "rout": "x"}, "unknown field `rout`"),
        ({"messages": [ui("user", "x")], "background": True}, "use POST /v1/streams"),
        ({"prompt": "x"}, "`prompt` is not accepted here"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages.0.parts"),
        ({"messages": [{"role": "tool", "parts": []}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "parts": [{"type": "file", "url": "data:,x"}]}]},
            "messages.0.parts.0: file parts are not supported",
        ),
        (
            {"messages": [{"role": "user", "parts": [{"type": "text", "text": 5}]}]},
            "messages.0.parts.0.text",
        ),
    ],
)
def test_what_the_body_cannot_be(body: dict[str, Any], says: str) -> None:
    with pytest.raises(RequestError) as info:
        chat_turn(body)
    assert says in info.value.message and info.value.status == 422


# -- the endpoint over HTTP -----------------------------------------------------------------

CHAT = "/v1/ai-sdk/chat"
HANG = {"tokens": ["a", "b"], "fault": {"kind": "hang", "at": 1}}


def chat_body(text: str = "Hi", chat_id: str = "chat-1", **options: Any) -> dict[str, Any]:
    return {
        "id": chat_id,
        "messages": [ui("user", text, id="u1")],
        "trigger": "submit-message",
        **options,
    }


class ChunkReader:
    """One response's AI SDK SSE framing, read back: JSON chunks, and ``"[DONE]"``. It keeps
    one byte iterator: abandoning an httpx iterator closes the connection."""

    def __init__(self, response: httpx.Response) -> None:
        self.decoder = SSEDecoder()
        self.chunks: list[Any] = []
        self._bytes = response.aiter_bytes()

    def feed(self, data: bytes) -> list[Any]:
        new = [
            m.data if m.data == "[DONE]" else json.loads(m.data) for m in self.decoder.feed(data)
        ]
        self.chunks += new
        return new

    async def until(self, kind: str) -> None:
        async for data in self._bytes:
            if any(isinstance(c, dict) and c["type"] == kind for c in self.feed(data)):
                return
        raise AssertionError(f"the stream ended without a {kind!r} chunk")

    async def to_end(self) -> list[Any]:
        async for data in self._bytes:
            self.feed(data)
        return self.chunks


@pytest.fixture
async def live() -> Any:
    async with live_server(settings()) as server:
        yield server


async def test_closing_the_connection_stops_the_turn(live: Live) -> None:
    async with live.client.stream("POST", CHAT, json=chat_body(script=HANG)) as response:
        assert response.status_code == 200
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        stream_id = response.headers["x-tokenwire-stream-id"]
        await ChunkReader(response).until("text-delta")
    # Leaving the block closed the connection: the originator is gone.
    async with asyncio.timeout(10):
        await live.provider.wait_aborted()
        terminal = await live.engine.handle(stream_id).wait()
    assert isinstance(terminal, Done) and terminal.reason is Reason.CLIENT_GONE


async def test_a_reconnect_replays_the_running_turn_then_answers_204(live: Live) -> None:
    assert (await live.client.get(f"{CHAT}/nothing-here/stream")).status_code == 204
    body = chat_body(chat_id="chat-r", script=HANG)
    async with live.client.stream("POST", CHAT, json=body) as first:
        stream_id = first.headers["x-tokenwire-stream-id"]
        original = ChunkReader(first)
        await original.until("text-delta")
        async with live.client.stream("GET", f"{CHAT}/chat-r/stream") as again:
            assert again.status_code == 200
            assert again.headers["x-vercel-ai-ui-message-stream"] == "v1"
            assert again.headers["x-tokenwire-stream-id"] == stream_id
            replay = ChunkReader(again)
            await replay.until("text-delta")
            assert replay.chunks[0]["messageId"] == stream_id
            cancelled = await live.client.post(f"/v1/streams/{stream_id}/cancel")
            assert cancelled.json()["cancelled"] is True
            replayed = await replay.to_end()
        told = await original.to_end()
    for chunks in (told, replayed):
        assert [c if c == "[DONE]" else c["type"] for c in chunks] == [
            "start",
            "start-step",
            "text-start",
            "text-delta",
            "text-end",
            "error",
            "finish-step",
            "finish",
            "[DONE]",
        ]
        assert chunks[5]["errorText"].startswith("cancelled: the answer is incomplete")
        assert chunks[7]["messageMetadata"]["reason"] == "cancelled"
    # The viewer leaving did not matter; the turn ended because it was cancelled.
    terminal = await live.engine.handle(stream_id).wait()
    assert isinstance(terminal, Done) and terminal.reason is Reason.CANCELLED
    assert (await live.client.get(f"{CHAT}/chat-r/stream")).status_code == 204


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"not json", 400, "invalid_json"),
        (json.dumps({"messages": [ui("user", "x")], "bogus": 1}).encode(), 422, "invalid_request"),
        (json.dumps({"messages": [ui("assistant", "only me")]}).encode(), 422, "invalid_request"),
        (json.dumps(chat_body(route="nope")).encode(), 422, "unknown_route"),
        (json.dumps(chat_body(max_tokens="5")).encode(), 422, "invalid_request"),
    ],
)
async def test_refusals_are_json_errors_and_start_nothing(
    live: Live, content: bytes, status: int, code: str
) -> None:
    response = await live.client.post(
        CHAT, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert live.provider.started == 0


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_with_auth_on_the_key_is_the_tenant() -> None:
    keys = [
        {"tenant": "acme", "hash": hash_key(KEY_A)},
        {"tenant": "acme", "hash": hash_key(KEY_A2)},
        {"tenant": "globex", "hash": hash_key(KEY_B)},
    ]
    async with live_server(settings(auth={"keys": keys})) as live:
        refused = await live.client.post(CHAT, json=chat_body())
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        body = chat_body(chat_id="chat-t", script=HANG)
        async with live.client.stream("POST", CHAT, json=body, headers=as_(KEY_A)) as response:
            assert response.status_code == 200
            stream_id = response.headers["x-tokenwire-stream-id"]
            assert response.headers["tokenwire-stream-token"]
            reader = ChunkReader(response)
            await reader.until("text-delta")
            # Another tenant's chat of the same id is not this one; the same tenant's is.
            other = await live.client.get(f"{CHAT}/chat-t/stream", headers=as_(KEY_B))
            assert other.status_code == 204
            path = f"{CHAT}/chat-t/stream"
            async with live.client.stream("GET", path, headers=as_(KEY_A2)) as mine:
                assert mine.status_code == 200
                assert mine.headers["x-tokenwire-stream-id"] == stream_id
            with pytest.raises(UnknownStream):
                live.engine.handle(stream_id, tenant="globex")
            cancel = f"/v1/streams/{stream_id}/cancel"
            assert (await live.client.post(cancel, headers=as_(KEY_A))).json()["cancelled"]
            assert (await reader.to_end())[-1] == "[DONE]"


# -- the real `ai` package, in Node ---------------------------------------------------------


def node() -> str:
    found = shutil.which("node")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is required for the AI SDK tests under CI=true")
        pytest.skip("node is not installed")
    if not (JS_DIR / "node_modules" / "ai").is_dir():
        pytest.fail("tests/js/node_modules is missing: run scripts/setup (npm ci in tests/js)")
    return found


async def read_with_the_sdk(live: Live, **config: Any) -> dict[str, Any]:
    """Run tests/js/read_stream.mjs against the live server; its JSON result."""
    config = {"url": live.url + CHAT, **config}
    process = await asyncio.create_subprocess_exec(
        node(),
        str(JS_DIR / "read_stream.mjs"),
        json.dumps(config),
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


def assert_framed(raw: str) -> list[Any]:
    """Every frame one ``data:`` line; the stream ends with ``data: [DONE]``."""
    assert raw.endswith("\n\ndata: [DONE]\n\n")
    frames = [f for f in raw.split("\n\n") if f]
    assert all(f.startswith("data: ") and "\n" not in f for f in frames)
    return [f.removeprefix("data: ") if f == "data: [DONE]" else json.loads(f[6:]) for f in frames]


@pytest.mark.parametrize("package", ["ai", "ai-5.0.0"])
async def test_the_sdk_reads_a_whole_turn(live: Live, package: str) -> None:
    script = {
        "tokens": ["Fine, ", "thanks."],
        "delay_ms": 5,
        "sources": [
            {"url": "https://docs.example/moods", "title": "Moods"},
            {"id": "kb-12", "title": "Handbook", "snippet": "How to answer."},
        ],
        "extraction": {"tokens": ['{"mood": "ca', 'lm"}'], "delay_ms": 5},
    }
    options = {"script": script, "extraction": {"schema": MOOD, "strategy": "sequential"}}
    result = await read_with_the_sdk(
        live, package=package, chatId="chat-9", text="How are you?", body=options
    )
    # The request is the transport's own.
    request = result["request"]["body"]
    assert request["id"] == "chat-9" and request["trigger"] == "submit-message"
    assert request["messages"] == [
        {"id": "msg-user-1", "role": "user", "parts": [{"type": "text", "text": "How are you?"}]}
    ]
    assert live.provider.requests[0].messages[-1].content == "How are you?"
    # The response is the SDK protocol, and the SDK's schema accepted every chunk.
    headers = result["headers"]
    assert result["status"] == 200 and headers["x-vercel-ai-ui-message-stream"] == "v1"
    stream_id = headers["x-tokenwire-stream-id"]
    assert assert_framed(result["raw"])[:-1] == result["chunks"]
    kinds = types(result["chunks"])
    assert kinds[:3] == ["start", "start-step", "text-start"]
    assert kinds[-2:] == ["finish-step", "finish"] and "error" not in kinds
    assert result["errors"] == []
    # What useChat would show: one text part, one structured part holding the final object.
    message = result["message"]
    assert message["id"] == stream_id and message["role"] == "assistant"
    assert message["parts"] == [
        {"type": "step-start"},
        {"type": "text", "text": "Fine, thanks.", "state": "done"},
        {
            "type": "data-structured",
            "id": "structured",
            "data": {"state": "done", "object": {"mood": "calm"}, "schema": None, "valid": True},
        },
        {
            "type": "source-url",
            "sourceId": "https://docs.example/moods",
            "url": "https://docs.example/moods",
            "title": "Moods",
        },
        {
            "type": "source-document",
            "sourceId": "kb-12",
            "mediaType": "text/plain",
            "title": "Handbook",
        },
    ]
    # Partial objects first, each replacing the one before: never two structured parts.
    states = []
    for snapshot in result["snapshots"]:
        parts = [p for p in snapshot["parts"] if p["type"] == "data-structured"]
        assert len(parts) <= 1
        if parts and (not states or states[-1] != parts[0]["data"]):
            states.append(parts[0]["data"])
    assert [s["state"] for s in states][-1] == "done"
    assert states[0]["state"] == "streaming" and len(states) >= 2
    metadata = message["metadata"]
    assert metadata["streamId"] == stream_id
    assert metadata["finishReason"] == "stop" and metadata["status"] == "completed"
    assert metadata["partial"] is False and metadata["usage"]["outputTokens"] == 2
    # ...and the record agrees.
    terminal = await live.engine.handle(stream_id).wait()
    assert isinstance(terminal, Done) and terminal.answer == "Fine, thanks."
    assert terminal.sources == ["https://docs.example/moods", "kb-12"]


FAILED = {"tokens": ["ab"], "fault": {"kind": "fail", "at": 0, "retryable": False}}
CUT = {"tokens": ["ab", "cd", "ef"], "fault": {"kind": "fail", "at": 2, "retryable": False}}


@pytest.mark.parametrize("package", ["ai", "ai-5.0.0"])
@pytest.mark.parametrize(
    ("script", "text", "error"),
    [
        (FAILED, None, "upstream_error: the upstream provider failed"),
        (CUT, "abcd", "upstream_error: the answer is incomplete (the upstream failed)"),
    ],
    ids=["failed", "cut-short"],
)
async def test_the_sdk_sees_an_error_for_a_failed_or_cut_short_turn(
    live: Live, package: str, script: dict[str, Any], text: str | None, error: str
) -> None:
    result = await read_with_the_sdk(live, package=package, body={"script": script})
    chunks = assert_framed(result["raw"])[:-1]
    assert chunks == result["chunks"]
    assert types(chunks)[-3:] == ["error", "finish-step", "finish"]
    assert chunks[-3]["errorText"] == error and result["errors"] == [error]
    finish = chunks[-1]["messageMetadata"]
    assert finish["finishReason"] == "error" and finish["reason"] == "upstream_error"
    assert finish["status"] == ("incomplete" if text else "failed")
    texts = [p["text"] for p in result["message"]["parts"] if p["type"] == "text"]
    assert texts == ([text] if text else [])


async def test_use_chat_ends_in_error_status_keeping_the_partial_text(live: Live) -> None:
    """What AbstractChat (useChat's engine) makes of a cut-short turn: status ``error``, the
    error's text, and the partial answer kept in the assistant message."""
    result = await read_with_the_sdk(live, mode="chat", text="Hi", body={"script": CUT})
    assert result["chatStatus"] == "error"
    assert result["error"] == "upstream_error: the answer is incomplete (the upstream failed)"
    user, answer = result["messages"]
    assert user["role"] == "user" and user["parts"] == [{"type": "text", "text": "Hi"}]
    assert answer["id"] == result["headers"]["x-tokenwire-stream-id"]
    assert [p for p in answer["parts"] if p["type"] == "text"] == [
        {"type": "text", "text": "abcd", "state": "done"}
    ]
    assert result["finish"]["isError"] is True


async def test_use_chat_reads_a_clean_turn_as_ready(live: Live) -> None:
    script = {"tokens": ["Hel", "lo"], "extraction": {"tokens": ['{"mood": "ok"}']}}
    options = {"script": script, "extraction": {"schema": MOOD, "strategy": "sequential"}}
    result = await read_with_the_sdk(live, mode="chat", text="Hi", body=options)
    assert result["chatStatus"] == "ready" and result["error"] is None
    _, answer = result["messages"]
    assert [p["type"] for p in answer["parts"]] == ["step-start", "text", "data-structured"]
    assert answer["parts"][1]["text"] == "Hello"
    assert answer["metadata"]["status"] == "completed"
    # onData saw the structured part as it came.
    assert result["data"][-1]["data"] == {
        "state": "done",
        "object": {"mood": "ok"},
        "schema": None,
        "valid": True,
    }
    assert result["finish"]["isError"] is False
