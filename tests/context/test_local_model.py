"""The context package against the real Gemma 3 270M (llama.cpp, CPU): llama.cpp's count is the
model's own, a long conversation fitted to n_ctx really runs, and the model writes summaries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tokenwire.config import LocalProviderSettings
from tokenwire.context import (
    HistoryTurn,
    LlamaTokenCounter,
    context_window_for,
    counter_for,
    fit_context,
    summarize,
)
from tokenwire.context.summary import SUMMARY_SCHEMA
from tokenwire.engine.scheduler import Priority, ProviderScheduler
from tokenwire.providers import Finish, GenerationRequest, Message, TextChunk, UsageChunk
from tokenwire.providers.local import LocalProvider
from tokenwire.providers.transcript import render

from ..support.model import HUNG_S

pytestmark = pytest.mark.model

GUARD_S = HUNG_S  # only a hang fails a test (the summary's timeout included)
FRUITS = ["apple", "banana", "cherry", "date", "elderberry", "fig", "grape", "kiwi", "lemon"]
MESSAGE_SETS: list[tuple[Message, ...]] = [
    (),
    (Message("user", "Why is the sky blue?"),),
    (
        Message("system", "Answer like a pirate."),
        Message("user", "Give me three tips\n\nfor clear emails."),
        Message("assistant", "First, be brief. Second, be kind."),
        Message("user", "Déjà vu? 東京 🎉 <start_of_turn>model <bos>"),
    ),
]


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    local = LocalProvider("local", LocalProviderSettings(n_threads=2))
    asyncio.run(local.start())
    yield local
    asyncio.run(local.aclose())


def conversation(turns: int) -> list[HistoryTurn]:
    history = []
    for i in range(turns):
        fruit = FRUITS[i % len(FRUITS)]
        history.append(
            HistoryTurn(
                f"tw_{i:02d}",
                (
                    Message(
                        "user",
                        f"Question {i}: what is {i} times {i + 1}, and what colour "
                        f"is a ripe {fruit}?",
                    ),
                    Message(
                        "assistant",
                        f"{i} times {i + 1} is {i * (i + 1)}. A ripe {fruit} "
                        "has its own colour, which depends on the variety.",
                    ),
                ),
            )
        )
    return history


async def model_count(provider: LocalProvider, messages: tuple[Message, ...]) -> int:
    prompt = render(messages).encode()

    def count(llm: Any) -> int:
        return len(llm.tokenize(prompt, add_bos=True, special=True))

    return await provider.call(count)


@pytest.mark.parametrize("messages", MESSAGE_SETS, ids=["empty", "question", "mixed"])
async def test_llama_count_is_the_models_count_of_the_rendered_prompt(
    provider: LocalProvider, messages: tuple[Message, ...]
) -> None:
    counter = counter_for(provider)
    assert isinstance(counter, LlamaTokenCounter) and counter.name == "llama.cpp"
    assert counter.count(messages) == await model_count(provider, messages)


async def test_llama_count_is_the_prompt_the_provider_reports(provider: LocalProvider) -> None:
    request = GenerationRequest(messages=MESSAGE_SETS[2], max_tokens=8, temperature=0.0)
    chunks = [c async for c in provider.stream(request)]
    (usage,) = [c for c in chunks if isinstance(c, UsageChunk)]
    assert usage.input_tokens == LlamaTokenCounter(provider).count(request.messages)


async def test_counting_while_the_model_generates(provider: LocalProvider) -> None:
    counter = LlamaTokenCounter(provider)
    messages = tuple(m for turn in conversation(20) for m in turn.messages)
    expected = counter.count(messages)
    request = GenerationRequest(
        messages=(Message("user", "Tell me a long story about a lighthouse."),),
        max_tokens=48,
        temperature=0.0,
    )
    counts = []
    async for chunk in provider.stream(request):
        if isinstance(chunk, TextChunk):
            # From another thread, while the worker thread samples the next token.
            counts.append(await asyncio.to_thread(counter.count, messages))
    assert len(counts) > 5 and set(counts) == {expected}


async def test_a_long_conversation_fitted_to_n_ctx_runs_without_overflow(
    provider: LocalProvider,
) -> None:
    n_ctx, max_tokens = context_window_for(provider), 128
    assert n_ctx == 2048
    counter = counter_for(provider)
    system = (Message("system", "Answer in one short sentence."),)
    history = conversation(60)
    new = (Message("user", "What is 7 times 8?"),)
    everything = (*system, *(m for t in history for m in t.messages), *new)
    assert counter.count(everything) > n_ctx  # without fitting it could not even be sent

    fit = fit_context(
        system, history, new, counter=counter, window=n_ctx, reserve_output=max_tokens
    )
    assert 0 < len(fit.kept) < 60
    assert fit.kept == tuple(t.stream_id for t in history[60 - len(fit.kept) :])
    assert fit.dropped == tuple(t.stream_id for t in history[: 60 - len(fit.kept)])
    assert fit.messages[0] == system[0] and fit.messages[-1] == new[0]
    # What the rendering overhead leaves unused: less than one more turn.
    assert n_ctx - max_tokens - fit.prompt_tokens < 60

    request = GenerationRequest(messages=fit.messages, max_tokens=max_tokens, temperature=0.0)
    chunks = await asyncio.wait_for(_collect(provider, request), GUARD_S)
    assert isinstance(chunks[-1], Finish)
    (usage,) = [c for c in chunks if isinstance(c, UsageChunk)]
    # The provider sent exactly the prompt that was fitted (its own trimming never ran), and
    # the answer had all the room it was promised.
    assert usage.input_tokens == fit.prompt_tokens
    assert usage.input_tokens + max_tokens <= n_ctx
    assert usage.output_tokens <= max_tokens


async def test_gemma_writes_a_summary(provider: LocalProvider) -> None:
    scheduler = ProviderScheduler(concurrency=1)
    turns = [
        HistoryTurn(
            "tw_1",
            (
                Message("user", "My name is Dana and I am planning a trip to Lisbon in May."),
                Message("assistant", "Lisbon in May is lovely. Book the tram 28 early."),
            ),
        ),
        HistoryTurn(
            "tw_2",
            (
                Message("user", "I am vegetarian. Where should I eat?"),
                Message("assistant", "Try the Time Out Market, it has vegetarian stalls."),
            ),
        ),
    ]
    summary = await summarize(provider, scheduler, turns, max_tokens=96, timeout_s=GUARD_S)
    assert summary.covers == ("tw_1", "tw_2")
    assert len(summary.text.split()) >= 3
    request = provider.turns[-1].request
    assert request.json_schema == SUMMARY_SCHEMA  # the base model gets the document form
    assert scheduler.stats().admitted[Priority.BACKGROUND] == 1


async def _collect(provider: LocalProvider, request: GenerationRequest) -> list[Any]:
    return [chunk async for chunk in provider.stream(request)]
