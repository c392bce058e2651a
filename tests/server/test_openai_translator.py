"""The OpenAI translation, sans-I/O, both ways: request bodies in, turn bodies out
(``server/openai_request.py``); events in, chunks and completions out
(``server/openai_translator.py``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tokenwire.protocol import Done, Error, Event, Phase, Reason, Start, Status, TextDelta, Usage
from tokenwire.server.openai_request import OpenAIRequestError, parse_chat_request
from tokenwire.server.openai_translator import (
    DONE,
    ChunkTranslator,
    completion,
    encode_frames,
    failure,
    model_list,
    opening_event,
)

ROUTES = {"default", "fast"}
USER = [{"role": "user", "content": "hi"}]
SID = "tw_0123"


def parse(**fields: Any) -> Any:
    return parse_chat_request({"model": "default", "messages": USER, **fields}, ROUTES)


def refused(**fields: Any) -> OpenAIRequestError:
    with pytest.raises(OpenAIRequestError) as info:
        parse(**fields)
    return info.value


# -- requests ------------------------------------------------------------------------------


def test_a_minimal_request() -> None:
    chat = parse()
    assert chat.model == "default" and chat.stream is False and chat.include_usage is False
    assert chat.turn == {"route": "default", "messages": [{"role": "user", "content": "hi"}]}


def test_honoured_fields_become_the_turn() -> None:
    chat = parse(
        model="fast",
        messages=[
            {"role": "developer", "content": "terse"},
            {"role": "system", "content": [{"type": "text", "text": "a"}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "c"}],
            },
            {"role": "assistant", "content": "d", "refusal": None, "tool_calls": []},
        ],
        stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
        max_completion_tokens=9,
        temperature=1,
        stop="END",
        n=1,
        user="u1",
        safety_identifier="s1",
        metadata={"k": "v"},
        tokenwire={"deadlines": {"idle_s": 2}, "conversation_id": None, "script": {"tokens": []}},
    )
    assert chat.stream is True and chat.include_usage is True
    assert chat.turn == {
        "route": "fast",
        "messages": [
            {"role": "system", "content": "terse"},
            {"role": "system", "content": "a"},
            {"role": "user", "content": "b\nc"},
            {"role": "assistant", "content": "d"},
        ],
        "max_tokens": 9,
        "temperature": 1.0,
        "stop": ["END"],
        "metadata": {"k": "v", "user": "u1", "safety_identifier": "s1"},
        "deadlines": {"idle_s": 2},
        "script": {"tokens": []},
    }


def test_null_is_absent_and_no_op_values_and_harmless_fields_are_accepted() -> None:
    nulls = dict.fromkeys(
        ["stream", "max_tokens", "stop", "n", "seed", "tools", "top_p", "reasoning_effort"]
    )
    assert parse(**nulls).turn == parse().turn
    accepted = parse(
        top_p=1.0,
        frequency_penalty=0,
        presence_penalty=0.0,
        logprobs=False,
        top_logprobs=0,
        logit_bias={},
        tools=[],
        tool_choice="auto",
        function_call="none",
        modalities=["text"],
        response_format={"type": "text"},
        service_tier="flex",
        store=False,
        prompt_cache_key="k",
        parallel_tool_calls=True,
    )
    assert accepted.turn == parse().turn


def test_max_tokens_is_either_name_once() -> None:
    assert parse(max_tokens=5).turn["max_tokens"] == 5
    assert parse(max_tokens=5, max_completion_tokens=5).turn["max_tokens"] == 5
    assert refused(max_tokens=5, max_completion_tokens=6).param == "max_tokens"
    assert refused(max_completion_tokens=0).param == "max_completion_tokens"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_p": True}, "top_p"),  # True == 1, but not a number
        ({"logprobs": 0}, "logprobs"),  # 0 == False, but not a boolean
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "x"}}, "audio"),
        ({"verbosity": "low"}, "verbosity"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"n": 3}, "n"),
        ({"stream": "yes"}, "stream"),
        ({"stream": True, "stream_options": {"chunk": 1}}, "stream_options.chunk"),
        ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
        ({"stop": ["a", 1]}, "stop"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"user": "a", "metadata": {"user": "b"}}, "user"),
        ({"tokenwire": {"background": True}}, "tokenwire.background"),
        ({"tokenwire": "x"}, "tokenwire"),
        ({"frobnicate": None}, "frobnicate"),
        ({"messages": "hi"}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x", "extra": 1}]}, "messages[0].extra"),
        ({"messages": [{"role": "user", "content": "x", "refusal": None}]}, "messages[0].refusal"),
        (
            {"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "c"}]}]},
            "messages[0].tool_calls",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "x", "cache": 1}]}
                ]
            },
            "messages[0].content[0].cache",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages[0].content[0].type",
        ),
    ],
)
def test_what_cannot_be_honoured_is_refused_naming_the_field(
    fields: dict[str, Any], param: str
) -> None:
    error = refused(**fields)
    assert error.status == 400 and error.param == param and error.message


def test_the_model_must_be_a_route() -> None:
    with pytest.raises(OpenAIRequestError) as info:
        parse_chat_request({"model": "gpt-4o", "messages": USER}, ROUTES)
    assert (info.value.status, info.value.code, info.value.param) == (
        404,
        "model_not_found",
        "model",
    )
    with pytest.raises(OpenAIRequestError) as missing:
        parse_chat_request({"messages": USER}, ROUTES)
    assert (missing.value.status, missing.value.param) == (400, "model")


# -- events → chunks -----------------------------------------------------------------------


def start() -> Start:
    return Start(stream_id=SID, seq=1, model="m", route="default", created_at=1700000000.7)


def done(reason: Reason = Reason.STOP, answer: str = "Hello", usage: bool = True) -> Done:
    return Done(
        stream_id=SID,
        seq=9,
        answer=answer,
        status="completed" if reason is Reason.STOP else "incomplete",
        partial=reason.is_partial,
        reason=reason,
        model="upstream-1",
        route="default",
        attempts=1,
        usage={"input_tokens": 3, "output_tokens": 2, "estimated": False} if usage else None,
    )


def error(code: str = "upstream_error", retryable: bool = True) -> Error:
    return Error(stream_id=SID, seq=4, code=code, message="boom", retryable=retryable)


def text(*deltas: str) -> list[Event]:
    return [TextDelta(stream_id=SID, seq=3 + i, delta=d) for i, d in enumerate(deltas)]


PRELUDE: list[Event] = [start(), Status(stream_id=SID, seq=2, phase=Phase.QUEUED)]


def kinds(frames: list[Any]) -> list[str]:
    """Each frame in a word: role, text, finish:<reason>, usage, error:<code>, done."""
    out = []
    for frame in frames:
        if frame == DONE:
            out.append("done")
        elif "error" in frame:
            out.append("error:" + frame["error"]["code"])
        elif not frame["choices"]:
            out.append("usage")
        else:
            choice = frame["choices"][0]
            if choice["finish_reason"]:
                out.append("finish:" + choice["finish_reason"])
            elif "role" in choice["delta"]:
                out.append("role")
            else:
                out.append("text")
    return out


def test_a_whole_answer_ends_with_finish_reason_and_done() -> None:
    translator = ChunkTranslator(SID, model="default", include_usage=False)
    frames = translator.feed([*PRELUDE, *text("Hel", "lo"), done()])
    assert kinds(frames) == ["role", "text", "text", "finish:stop", "done"]
    assert translator.finished
    role, first, _, final, _ = frames
    assert first == {
        "id": "chatcmpl-" + SID,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "default",
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "delta": {"content": "Hel"}, "logprobs": None, "finish_reason": None}
        ],
    }
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert final["choices"][0]["delta"] == {}
    assert final["tokenwire"] == {
        "stream_id": SID,
        "status": "completed",
        "reason": "stop",
        "partial": False,
        "model": "upstream-1",
        "usage_estimated": False,
    }


@pytest.mark.parametrize("reason", [Reason.LENGTH, Reason.CONTENT_FILTER])
def test_the_models_own_endings_keep_their_finish_reason(reason: Reason) -> None:
    frames = ChunkTranslator(SID, model="m", include_usage=False).feed([*PRELUDE, done(reason)])
    assert kinds(frames) == ["role", f"finish:{reason.value}", "done"]


def test_usage_chunk_and_null_usage_elsewhere() -> None:
    frames = ChunkTranslator(SID, model="m", include_usage=True).feed(
        [*PRELUDE, *text("x"), done()]
    )
    assert kinds(frames) == ["role", "text", "finish:stop", "usage", "done"]
    assert all(f["usage"] is None for f in frames[:3])
    assert frames[3]["choices"] == []
    assert frames[3]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


@pytest.mark.parametrize(
    "reason",
    [r for r in Reason if r.is_partial],
)
def test_a_partial_answer_never_claims_to_have_finished(reason: Reason) -> None:
    translator = ChunkTranslator(SID, model="m", include_usage=True)
    frames = translator.feed([*PRELUDE, *text("a"), done(reason, answer="a")])
    assert kinds(frames) == ["role", "text", "usage", f"error:{reason.value}"]
    err = frames[-1]["error"]
    assert set(err) == {"message", "type", "param", "code", "tokenwire"}
    assert err["tokenwire"]["partial"] is True and err["tokenwire"]["reason"] == reason.value
    assert "answer" not in err["tokenwire"]  # the stream already carried it


def test_an_error_after_the_headers_is_an_error_object() -> None:
    translator = ChunkTranslator(SID, model="m", include_usage=True)
    assert translator.feed(PRELUDE) == []
    assert kinds(translator.open()) == ["role"]
    assert translator.open() == []
    frames = translator.feed([error("timeout_first_token")])
    assert kinds(frames) == ["error:timeout_first_token"]  # no usage: nothing was generated
    assert frames[0]["error"]["type"] == "server_error"
    assert frames[0]["error"]["tokenwire"]["status"] == "failed"


def test_frames_are_data_lines() -> None:
    chunk = {"choices": [{"delta": {"content": "a\n\ndata: x"}}]}
    encoded = encode_frames([chunk, DONE])
    assert encoded == b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
    assert encoded.count(b"\n") == 4  # the newlines of the text stay escaped in the JSON


def test_the_opening_event_is_the_first_past_start_and_status() -> None:
    assert opening_event(PRELUDE) is None
    assert opening_event([*PRELUDE, *text("a")]) == text("a")[0]
    assert opening_event([*PRELUDE, error()]) == error()


# -- whole answers, failures ---------------------------------------------------------------


def test_a_completion() -> None:
    body = completion(done(answer="Hi."), model="default", created=17)
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-" + SID
    assert body["created"] == 17 and body["model"] == "default"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"]["total_tokens"] == 5 and body["tokenwire"]["reason"] == "stop"


@pytest.mark.parametrize(
    ("reason", "status", "retryable"),
    [
        (Reason.UPSTREAM_ERROR, 502, True),
        (Reason.UPSTREAM_TRUNCATED, 502, True),
        (Reason.WORKER_LOST, 502, True),
        (Reason.TIMEOUT_FIRST_TOKEN, 504, True),
        (Reason.TIMEOUT_IDLE, 504, True),
        (Reason.TIMEOUT_TOTAL, 504, True),
        (Reason.SHUTDOWN, 503, True),
        (Reason.CANCELLED, 499, False),
        (Reason.CLIENT_GONE, 499, False),
    ],
)
def test_a_partial_turn_fails_with_its_status(reason: Reason, status: int, retryable: bool) -> None:
    answer = failure(done(reason, answer="par"))
    assert answer.status == status and answer.retryable is retryable
    assert answer.headers["x-should-retry"] == ("true" if retryable else "false")
    assert ("Retry-After" in answer.headers) is (status == 503)
    err = answer.body["error"]
    assert err["code"] == reason.value
    assert err["type"] == ("cancelled" if status == 499 else "server_error")
    assert err["tokenwire"]["answer"] == "par" and err["tokenwire"]["usage"]["total_tokens"] == 5


def test_an_error_event_fails_with_its_own_retryability() -> None:
    answer = failure(error("upstream_error", retryable=False))
    assert answer.status == 502 and answer.headers == {"x-should-retry": "false"}
    assert answer.body["error"]["message"] == "boom"
    assert failure(error("timeout_first_token")).status == 504
    assert failure(error("something_new")).status == 502


def test_models_are_the_routes_sorted() -> None:
    listing = model_list(["fast", "default"], created=5)
    assert listing == {
        "object": "list",
        "data": [
            {"id": "default", "object": "model", "created": 5, "owned_by": "tokenwire"},
            {"id": "fast", "object": "model", "created": 5, "owned_by": "tokenwire"},
        ],
    }


def test_usage_is_zero_when_no_provider_was_reached() -> None:
    frames = ChunkTranslator(SID, model="m", include_usage=True).feed(
        [*PRELUDE, done(Reason.CANCELLED, answer="", usage=False)]
    )
    assert frames[1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_a_usage_event_alone_says_nothing() -> None:
    translator = ChunkTranslator(SID, model="m", include_usage=True)
    usage = Usage(stream_id=SID, seq=3, input_tokens=1, output_tokens=1)
    assert translator.feed([*PRELUDE, usage]) == []
