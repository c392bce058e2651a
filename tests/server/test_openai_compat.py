"""The OpenAI-compatible endpoints, with the official ``openai`` SDK as the client, against a real
server on loopback (scripted provider): what an OpenAI app gets, including when a turn fails."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest

from tokenwire.auth import generate_key, hash_key

from .conftest import Live, live_server, settings

USER = [{"role": "user", "content": "hi"}]
HANG_AFTER_A = {"tokens": ["a", "b"], "fault": {"kind": "hang", "at": 1}}


def script(**fields: Any) -> dict[str, Any]:
    """The request extension carrying the scripted provider's script (``extra_body``)."""
    return {"tokenwire": {"script": fields}}


@contextlib.asynccontextmanager
async def sdk(live: Live, api_key: str = "unused", **options: Any) -> AsyncIterator[Any]:
    options.setdefault("max_retries", 0)
    client = openai.AsyncOpenAI(base_url=live.url + "/v1", api_key=api_key, **options)
    try:
        yield client
    finally:
        await client.close()


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_reasons(chunks: list[Any]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


async def raw_frames(live: Live, body: dict[str, Any]) -> list[str]:
    """The ``data:`` payloads of a streamed response, read without the SDK."""
    async with live.client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    lines = [line for line in raw.decode().split("\n") if line and not line.startswith(":")]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line.removeprefix("data: ") for line in lines]


# -- streamed ------------------------------------------------------------------------------


async def test_a_streamed_turn_with_the_sdk(live: Live) -> None:
    async with sdk(live) as client:
        stream = await client.chat.completions.create(
            model="default",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=script(tokens=["Hel", "lo", " world"], delay_ms=5),
        )
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        stream_id = stream.response.headers["x-tokenwire-stream-id"]
        chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.id for c in chunks} == {f"chatcmpl-{stream_id}"}
    assert {c.model for c in chunks} == {"default"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text_of(chunks) == "Hello world"
    # The final choice chunk, then the usage chunk (no choices); every other chunk: usage null.
    *body, final, usage = chunks
    assert finish_reasons(chunks) == ["stop"] and final.choices[0].finish_reason == "stop"
    assert final.model_extra["tokenwire"] == {
        "stream_id": stream_id,
        "status": "completed",
        "reason": "stop",
        "partial": False,
        "model": "scripted",
        "usage_estimated": False,
    }
    assert usage.choices == []
    assert usage.usage is not None
    counts = (usage.usage.prompt_tokens, usage.usage.completion_tokens, usage.usage.total_tokens)
    assert counts == (1, 3, 4)
    assert all(c.usage is None for c in [*body, final])
    status = (await live.client.get(f"/v1/streams/{stream_id}")).json()
    assert status["state"] == "completed"


async def test_the_raw_stream_is_data_lines_ending_with_done(live: Live) -> None:
    body = {"model": "default", "messages": USER, "stream": True, **script(tokens=["x\n\ny"])}
    frames = await raw_frames(live, body)
    assert frames[-1] == "[DONE]"
    chunks = [orjson.loads(f) for f in frames[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "x\n\ny"
    assert all("usage" not in c for c in chunks)  # no include_usage: no usage field at all


@pytest.mark.parametrize("finish", ["length", "content_filter"])
async def test_the_models_own_endings_are_finish_reasons(live: Live, finish: str) -> None:
    async with sdk(live) as client:
        stream = await client.chat.completions.create(
            model="default", messages=USER, stream=True, extra_body=script(finish=finish)
        )
        chunks = [chunk async for chunk in stream]
        completion = await client.chat.completions.create(
            model="default", messages=USER, extra_body=script(finish=finish)
        )
    assert finish_reasons(chunks) == [finish]
    assert completion.choices[0].finish_reason == finish


async def test_a_truncated_stream_ends_with_an_error_never_with_stop(live: Live) -> None:
    truncated = script(tokens=["a", "b"], fault={"kind": "truncate", "at": 2})
    async with sdk(live) as client:
        stream = await client.chat.completions.create(
            model="default",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=truncated,
        )
        stream_id = stream.response.headers["x-tokenwire-stream-id"]
        chunks: list[Any] = []
        # The SDK yields the text and the usage, then raises APIError on the error object.
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                chunks.append(chunk)
    error = info.value
    assert type(error) is openai.APIError
    assert error.code == "upstream_truncated" and error.type == "server_error"
    assert isinstance(error.body, dict)
    assert error.body["tokenwire"] == {
        "stream_id": stream_id,
        "status": "incomplete",
        "reason": "upstream_truncated",
        "partial": True,
        "model": "scripted",
        "usage_estimated": True,
    }
    assert text_of(chunks) == "ab"
    assert finish_reasons(chunks) == []  # no chunk claims the choice finished
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2

    # On the wire: the error object is the last frame, and there is no [DONE].
    frames = await raw_frames(
        live, {"model": "default", "messages": USER, "stream": True, **truncated}
    )
    assert "[DONE]" not in frames
    assert orjson.loads(frames[-1])["error"]["code"] == "upstream_truncated"


async def test_a_failure_after_text_is_an_error_in_the_stream(live: Live) -> None:
    failing = script(tokens=["a", "b"], fault={"kind": "fail", "at": 1, "retryable": True})
    async with sdk(live) as client:
        stream = await client.chat.completions.create(
            model="default", messages=USER, stream=True, extra_body=failing
        )
        chunks: list[Any] = []
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                chunks.append(chunk)
    assert info.value.code == "upstream_error"
    assert text_of(chunks) == "a" and finish_reasons(chunks) == []


@pytest.mark.parametrize("stream", [True, False])
async def test_a_failure_before_any_text_is_an_http_status(live: Live, stream: bool) -> None:
    failing = script(fault={"kind": "fail", "at": 0, "retryable": False, "message": "refused"})
    # max_retries=2: the SDK would retry a 502, but x-should-retry: false says not to.
    async with sdk(live, max_retries=2) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(
                model="default", messages=USER, stream=stream, extra_body=failing
            )
    error = info.value
    assert error.status_code == 502 and error.code == "upstream_error"
    # The script's message plays the upstream's words: they stay in the server log.
    assert "refused" not in error.message and "the upstream provider failed" in error.message
    assert error.response.headers["x-should-retry"] == "false"
    assert "x-tokenwire-stream-id" in error.response.headers
    assert isinstance(error.body, dict) and error.body["tokenwire"]["status"] == "failed"
    assert live.provider.started == 1


async def test_a_stream_that_waits_long_for_its_first_token_gets_its_headers() -> None:
    # The status line is held until the turn shows how it begins, at most a heartbeat
    # interval: then the headers and the role chunk go out, and a later end is in the stream.
    async with live_server(settings(server={"heartbeat_s": 0.05})) as live, sdk(live) as client:
        stream = await client.chat.completions.create(
            model="default",
            messages=USER,
            stream=True,
            extra_body=script(fault={"kind": "hang", "at": 0}),
        )
        stream_id = stream.response.headers["x-tokenwire-stream-id"]
        chunks = aiter(stream)
        first = await anext(chunks)
        assert first.choices[0].delta.role == "assistant"
        await live.client.post(f"/v1/streams/{stream_id}/cancel")
        with pytest.raises(openai.APIError) as info:
            await anext(chunks)
        assert info.value.code == "cancelled"


# -- not streamed --------------------------------------------------------------------------


async def test_a_completion_with_the_sdk(live: Live) -> None:
    async with sdk(live) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="default", messages=USER, extra_body=script(tokens=["  Hi", " there \n\n\n"])
        )
    completion = raw.parse()
    stream_id = raw.headers["x-tokenwire-stream-id"]
    terminal = (await live.client.get(f"/v1/streams/{stream_id}")).json()["terminal"]
    assert completion.object == "chat.completion" and completion.id == f"chatcmpl-{stream_id}"
    assert completion.model == "default"
    [choice] = completion.choices
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == terminal["answer"] == "Hi there"  # the canonical answer
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 1 and completion.usage.completion_tokens == 2
    assert completion.model_extra["tokenwire"]["reason"] == "stop"


async def test_a_truncated_completion_is_a_502_carrying_the_partial_answer(live: Live) -> None:
    async with sdk(live) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(
                model="default",
                messages=USER,
                extra_body=script(tokens=["a", "b"], fault={"kind": "truncate", "at": 2}),
            )
    error = info.value
    assert error.status_code == 502 and error.code == "upstream_truncated"
    assert error.response.headers["x-should-retry"] == "true"
    assert isinstance(error.body, dict)
    ext = error.body["tokenwire"]
    assert ext["answer"] == "ab" and ext["partial"] is True
    assert ext["usage"]["completion_tokens"] == 2


async def test_a_cancelled_completion_is_a_499(live: Live) -> None:
    texted = asyncio.Event()

    async def on_text(_event: Any) -> None:
        texted.set()

    live.engine.hooks.subscribe(on_text, types={"text.delta"})
    async with sdk(live) as client:
        request = asyncio.ensure_future(
            client.chat.completions.create(
                model="default", messages=USER, extra_body=script(**HANG_AFTER_A)
            )
        )
        await texted.wait()
        [turn] = live.engine.active()
        live.engine.cancel(turn.stream_id)
        with pytest.raises(openai.APIStatusError) as info:
            await request
    assert info.value.status_code == 499 and info.value.code == "cancelled"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert isinstance(info.value.body, dict) and info.value.body["tokenwire"]["answer"] == "a"


# -- the client leaving stops the turn -----------------------------------------------------


async def test_closing_the_stream_cancels_the_turn_and_the_upstream(live: Live) -> None:
    async with sdk(live) as client:
        stream = await client.chat.completions.create(
            model="default", messages=USER, stream=True, extra_body=script(**HANG_AFTER_A)
        )
        stream_id = stream.response.headers["x-tokenwire-stream-id"]
        async for chunk in stream:
            if chunk.choices[0].delta.content:
                break
        await stream.close()
        async with asyncio.timeout(10):  # a guard: a hang fails instead of stalling
            await live.provider.wait_aborted()
            await live.engine.handle(stream_id).wait()
    status = (await live.client.get(f"/v1/streams/{stream_id}")).json()
    assert status["terminal"]["reason"] == "client_gone"


async def test_a_completion_client_that_leaves_cancels_the_turn(live: Live) -> None:
    texted = asyncio.Event()

    async def on_text(_event: Any) -> None:
        texted.set()

    live.engine.hooks.subscribe(on_text, types={"text.delta"})
    async with sdk(live) as client:
        request = asyncio.ensure_future(
            client.chat.completions.create(
                model="default", messages=USER, extra_body=script(**HANG_AFTER_A)
            )
        )
        await texted.wait()
        [turn] = live.engine.active()
        request.cancel()  # the SDK's connection closes
        with contextlib.suppress(asyncio.CancelledError):
            await request
        async with asyncio.timeout(10):
            await live.provider.wait_aborted()
            terminal = await live.engine.handle(turn.stream_id).wait()
    assert terminal.type == "done" and terminal.reason == "client_gone"


async def test_a_client_that_leaves_before_the_headers_cancels_the_turn(live: Live) -> None:
    generating = asyncio.Event()

    async def on_status(event: Any) -> None:
        if event.phase == "generating":
            generating.set()

    live.engine.hooks.subscribe(on_status, types={"status"})
    async with sdk(live) as client:
        # No token comes: the status line is still held (heartbeat_s is 15 s) when it leaves.
        request = asyncio.ensure_future(
            client.chat.completions.create(
                model="default",
                messages=USER,
                stream=True,
                extra_body=script(fault={"kind": "hang", "at": 0}),
            )
        )
        await generating.wait()
        [turn] = live.engine.active()
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request
        async with asyncio.timeout(10):
            await live.provider.wait_aborted()
            terminal = await live.engine.handle(turn.stream_id).wait()
    assert terminal.type == "done" and terminal.reason == "client_gone"


# -- requests ------------------------------------------------------------------------------


async def test_honoured_fields_reach_the_provider(live: Live) -> None:
    async with sdk(live) as client:
        completion = await client.chat.completions.create(
            model="default",
            messages=[
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
                },
                {"role": "assistant", "content": "ok", "refusal": None, "tool_calls": None},
                {"role": "user", "content": "three"},
            ],
            max_completion_tokens=7,
            temperature=0.2,
            stop="\n\n",
            n=1,
            user="u1",
            metadata={"app": "demo"},
            # Accepted: harmless, or at their no-op value.
            top_p=1,
            frequency_penalty=0,
            service_tier="auto",
            store=True,
            tool_choice="none",
            extra_body=script(tokens=["fine"]),
        )
    assert completion.choices[0].message.content == "fine"
    [asked] = list(live.provider.requests)
    assert [(m.role, m.content) for m in asked.messages] == [
        ("system", "Be brief."),
        ("user", "one\ntwo"),
        ("assistant", "ok"),
        ("user", "three"),
    ]
    assert asked.max_tokens == 7 and asked.temperature == 0.2 and asked.stop == ("\n\n",)
    assert dict(asked.metadata) == {"app": "demo", "user": "u1"}


BAD_REQUESTS: list[tuple[dict[str, Any], str | None]] = [
    ({"n": 2}, "n"),
    ({"top_p": 0.5}, "top_p"),
    ({"seed": 7}, "seed"),
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"max_tokens": 5, "max_completion_tokens": 6}, "max_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"extra_body": {"bogus": 1}}, "bogus"),
    ({"extra_body": {"tokenwire": {"background": True}}}, "tokenwire.background"),
    (
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        },
        "messages[0].content[0].type",
    ),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "c"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x", "name": "ann"}]}, "messages[0].name"),
    ({"messages": []}, "messages"),
    # Refused by the engine's own validation (tokenwire says 422; OpenAI's clients expect 400).
    ({"messages": [{"role": "user", "content": " "}]}, None),
    ({"max_tokens": 10**9}, None),
]


@pytest.mark.parametrize(("fields", "param"), BAD_REQUESTS)
async def test_what_cannot_be_honoured_is_a_400(
    live: Live, fields: dict[str, Any], param: str | None
) -> None:
    request: dict[str, Any] = {"model": "default", "messages": USER} | fields
    async with sdk(live) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(**request)
    error = info.value
    assert error.param == param and error.type == "invalid_request_error"
    assert error.message and live.provider.started == 0


async def test_a_body_that_is_not_json_is_a_400_in_openais_shape(live: Live) -> None:
    response = await live.client.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json"


# -- models --------------------------------------------------------------------------------


async def test_models_are_the_routes() -> None:
    config = settings(routes={"default": {"providers": ["s"]}, "fast": {"providers": ["s"]}})
    async with live_server(config) as live, sdk(live) as client:
        page = await client.models.list()
        assert [m.id for m in page.data] == ["default", "fast"]
        assert {(m.object, m.owned_by) for m in page.data} == {("model", "tokenwire")}
        assert (await client.models.retrieve("fast")).id == "fast"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-4o")
        completion = await client.chat.completions.create(model="fast", messages=USER)
        assert completion.model == "fast"
        assert completion.model_extra["tokenwire"]["model"] == "scripted"


@pytest.mark.parametrize("stream", [True, False])
async def test_an_unknown_model_is_a_404(live: Live, stream: bool) -> None:
    async with sdk(live) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=USER, stream=stream)
    assert info.value.code == "model_not_found" and info.value.param == "model"
    assert "GET /v1/models" in info.value.message


# -- access, overload ----------------------------------------------------------------------


KEY_A, KEY_B = generate_key(), generate_key()


async def test_api_keys_are_checked_and_turns_belong_to_their_tenant() -> None:
    keys = [
        {"tenant": "acme", "hash": hash_key(KEY_A)},
        {"tenant": "globex", "hash": hash_key(KEY_B)},
    ]
    async with live_server(settings(auth={"keys": keys})) as live:
        async with sdk(live, api_key="tw_not-a-real-key") as client:
            with pytest.raises(openai.AuthenticationError) as info:
                await client.chat.completions.create(model="default", messages=USER)
            assert info.value.code == "invalid_api_key"
            assert info.value.response.headers["www-authenticate"].startswith("Bearer")
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
        # No key at all (the SDK refuses to send none): the same 401, in OpenAI's shape.
        bare = await live.client.post(
            "/v1/chat/completions", json={"model": "default", "messages": USER}
        )
        assert bare.status_code == 401
        assert bare.json()["error"]["code"] == "missing_api_key"
        async with sdk(live, api_key=KEY_A) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="default", messages=USER
            )
        stream_id = raw.headers["x-tokenwire-stream-id"]
        assert raw.headers["tokenwire-stream-token"]
        mine = await live.client.get(
            f"/v1/streams/{stream_id}", headers={"Authorization": f"Bearer {KEY_A}"}
        )
        theirs = await live.client.get(
            f"/v1/streams/{stream_id}", headers={"Authorization": f"Bearer {KEY_B}"}
        )
        assert mine.status_code == 200 and theirs.status_code == 404


async def test_overload_is_a_503_with_retry_after() -> None:
    async with live_server(settings(limits={"max_active_turns": 1})) as live, sdk(live) as client:
        body = {"prompt": "x", "background": True, "script": HANG_AFTER_A}
        started = (await live.client.post("/v1/streams", json=body)).json()
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="default", messages=USER)
        await live.client.post(f"/v1/streams/{started['stream_id']}/cancel")
    assert info.value.status_code == 503 and info.value.code == "overloaded"
    assert info.value.response.headers["retry-after"]
