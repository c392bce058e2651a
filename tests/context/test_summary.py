"""Summaries: the request in both forms, and summarize() on the scripted provider through a
real ProviderScheduler: background priority, failures, timeouts, cut-short answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tokenwire.context import (
    ContextSummary,
    HistoryTurn,
    SummaryFailed,
    summarize,
    summary_request,
    summary_text,
)
from tokenwire.context.summary import MAX_QUOTED_CHARS, SUMMARY_SCHEMA
from tokenwire.engine.scheduler import Grant, Priority, ProviderScheduler
from tokenwire.providers import Message, ScriptedProvider

TURNS = [
    HistoryTurn(
        "s1",
        (
            Message("user", "My name is Dana and I am planning a trip to Lisbon in May."),
            Message("assistant", "Lisbon in May is lovely.\n\nBook tram 28 early."),
        ),
    ),
    HistoryTurn(
        "s2",
        (
            Message("user", "I am vegetarian. Where should I eat?"),
            Message("assistant", "Try the Time Out Market."),
        ),
    ),
]
SUMMARY = ["Dana", " plans", " a vegetarian", " trip", " to Lisbon", "."]


async def until(condition: Callable[[], bool]) -> None:
    # Every step here happens within a few loop iterations; no clock involved.
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def test_chat_request_quotes_each_message_on_one_line() -> None:
    request = summary_request(TURNS, max_tokens=128)
    system, user = request.messages
    assert system.role == "system" and "summar" in system.content
    assert user.role == "user"
    assert user.content.endswith(
        "Conversation:\n"
        "User: My name is Dana and I am planning a trip to Lisbon in May.\n"
        "Assistant: Lisbon in May is lovely. Book tram 28 early.\n"
        "User: I am vegetarian. Where should I eat?\n"
        "Assistant: Try the Time Out Market."
    )
    assert (request.max_tokens, request.temperature, request.json_schema) == (128, 0.0, None)


def test_document_request_ends_with_json_after_two_worked_examples() -> None:
    request = summary_request(TURNS, max_tokens=96, document=True)
    (only,) = request.messages
    assert request.json_schema == SUMMARY_SCHEMA
    *examples, current = only.content.split("\n\n")
    assert len(examples) == 2
    for example in examples:
        assert example.startswith("Conversation:\nUser: ")
        answer = json.loads(example.split("\nJSON: ")[1])  # each shows the JSON asked for
        assert set(answer) == {"summary"}
    assert current.startswith("Conversation:\nUser: My name is Dana")
    assert current.endswith("\nJSON:")


def test_an_earlier_summary_is_carried_in_both_forms() -> None:
    previous = ContextSummary("Dana is planning a trip.", covers=("s0",))
    chat = summary_request(TURNS, max_tokens=64, previous=previous)
    assert "Summary of what came before it: Dana is planning a trip." in chat.messages[1].content
    document = summary_request(TURNS, max_tokens=64, previous=previous, document=True)
    _, example, current = document.messages[0].content.split("\n\n")
    assert example.startswith("Conversation:\nEarlier: ")  # shown how, by the example
    assert current.startswith("Conversation:\nEarlier: Dana is planning a trip.\nUser: ")


def test_long_messages_are_clipped() -> None:
    turn = HistoryTurn("s1", (Message("user", "x" * 5000), Message("assistant", "ok")))
    content = summary_request([turn], max_tokens=64).messages[1].content
    quoted = content.split("User: ")[1].split("\n")[0]
    assert len(quoted) == MAX_QUOTED_CHARS and quoted.endswith("…")


def test_nothing_to_summarise_is_a_mistake() -> None:
    with pytest.raises(ValueError):
        summary_request([], max_tokens=64)


def test_summary_text_of_each_form() -> None:
    assert summary_text("  Dana plans\n a trip. ", document=False) == "Dana plans a trip."
    assert summary_text('{"summary": "Dana plans a trip."}', document=True) == "Dana plans a trip."
    for bad in ['{"summary": 3}', "{}", '{"summary": "Dana', "no json", '{"summary": " "}']:
        with pytest.raises(SummaryFailed) as caught:
            summary_text(bad, document=True)
        assert caught.value.code == "invalid"
    with pytest.raises(SummaryFailed):
        summary_text(" \n", document=False)


async def test_summarize_collects_the_text_and_covers_every_turn() -> None:
    provider = ScriptedProvider()
    previous = ContextSummary("Earlier.", covers=("s0", "s1"))
    summary = await summarize(
        provider,
        None,
        TURNS,
        max_tokens=64,
        timeout_s=60,
        previous=previous,
        script={"tokens": SUMMARY},
    )
    assert summary == ContextSummary("Dana plans a vegetarian trip to Lisbon.", ("s0", "s1", "s2"))
    (request,) = provider.requests
    assert request.json_schema is None  # not a local provider: the chat form
    assert "Earlier." in request.messages[1].content


async def test_summarize_waits_behind_interactive_calls() -> None:
    provider = ScriptedProvider()
    scheduler = ProviderScheduler(concurrency=1, aging_s=3600)
    order: list[str] = []
    user_done = asyncio.Event()

    async def interactive() -> None:
        async with scheduler.slot(Priority.INTERACTIVE):
            order.append("user")
            assert provider.started == 0  # the summary, queued first, has not started
            await user_done.wait()

    async with scheduler.slot(Priority.INTERACTIVE):  # the model is busy with a turn
        task = asyncio.create_task(
            summarize(
                provider, scheduler, TURNS, max_tokens=64, timeout_s=60, script={"tokens": SUMMARY}
            )
        )
        await until(lambda: scheduler.stats().waiting[Priority.BACKGROUND] == 1)
        user = asyncio.create_task(interactive())
        await until(lambda: scheduler.stats().waiting[Priority.INTERACTIVE] == 1)
    # Releasing the slot admitted the interactive call, queued after the summary, first.
    await until(lambda: order == ["user"])
    assert scheduler.stats().waiting[Priority.BACKGROUND] == 1
    user_done.set()
    await user
    summary = await task
    assert summary.text == "Dana plans a vegetarian trip to Lisbon."
    stats = scheduler.stats()
    assert stats.admitted == {Priority.INTERACTIVE: 2, Priority.BACKGROUND: 1}
    assert stats.active == 0


async def test_summarize_charges_an_estimate_then_reports_its_usage() -> None:
    provider = ScriptedProvider()
    scheduler = ProviderScheduler(tpm=100_000)
    grants: list[Grant] = []
    charged: list[int] = []
    real_slot = scheduler.slot

    @contextlib.asynccontextmanager
    async def spy(priority: Priority, *, tokens: int = 0) -> AsyncIterator[Grant]:
        charged.append(tokens)
        async with real_slot(priority, tokens=tokens) as grant:
            grants.append(grant)
            yield grant

    scheduler.slot = spy  # type: ignore[method-assign]
    await summarize(provider, scheduler, TURNS, max_tokens=64, timeout_s=60)
    ((grant,),) = [grants]
    assert grant.priority is Priority.BACKGROUND
    assert charged[0] > 64  # the prompt's estimate plus max_tokens
    # The scripted usage: 2 input tokens (one per message), 6 output tokens (its default).
    assert grant.tokens == 2 + 6


@pytest.mark.parametrize("retryable", [True, False])
async def test_a_provider_failure_is_a_summary_failure(retryable: bool) -> None:
    provider = ScriptedProvider()
    scheduler = ProviderScheduler(concurrency=1)
    script = {"fault": {"kind": "fail", "at": 2, "retryable": retryable, "message": "boom"}}
    with pytest.raises(SummaryFailed) as caught:
        await summarize(provider, scheduler, TURNS, max_tokens=64, timeout_s=60, script=script)
    assert (caught.value.code, caught.value.retryable) == ("provider_error", retryable)
    # The provider's own words ("boom") stay in the log; the failure says tokenwire's.
    assert "the upstream provider failed" in str(caught.value) and "boom" not in str(caught.value)
    assert scheduler.stats().active == 0  # the slot went back


async def test_a_hung_provider_times_out_and_is_aborted() -> None:
    provider = ScriptedProvider()
    script = {"tokens": SUMMARY, "fault": {"kind": "hang", "at": 1}}
    with pytest.raises(SummaryFailed) as caught:
        await summarize(provider, None, TURNS, max_tokens=64, timeout_s=0.05, script=script)
    assert caught.value.code == "timeout"
    assert provider.aborted == 1


async def test_the_timeout_covers_the_wait_for_a_slot() -> None:
    provider = ScriptedProvider()
    scheduler = ProviderScheduler(concurrency=1)
    async with scheduler.slot(Priority.INTERACTIVE):
        with pytest.raises(SummaryFailed) as caught:
            await summarize(provider, scheduler, TURNS, max_tokens=64, timeout_s=0.05)
    assert caught.value.code == "timeout"
    assert provider.started == 0
    assert scheduler.stats().waiting[Priority.BACKGROUND] == 0


@pytest.mark.parametrize(
    ("script", "code"),
    [
        ({"tokens": SUMMARY, "fault": {"kind": "truncate", "at": 3}}, "truncated"),
        ({"tokens": SUMMARY, "finish": "length"}, "length"),
        ({"tokens": SUMMARY, "finish": "content_filter"}, "invalid"),
        ({"tokens": [" ", "\n"]}, "invalid"),
    ],
)
async def test_a_summary_cut_short_or_empty_is_not_a_summary(
    script: dict[str, Any], code: str
) -> None:
    with pytest.raises(SummaryFailed) as caught:
        await summarize(ScriptedProvider(), None, TURNS, max_tokens=64, timeout_s=60, script=script)
    assert caught.value.code == code


async def test_cancelling_the_caller_aborts_the_call() -> None:
    provider = ScriptedProvider()
    script = {"tokens": SUMMARY, "fault": {"kind": "hang", "at": 1}}
    task = asyncio.create_task(
        summarize(provider, None, TURNS, max_tokens=64, timeout_s=60, script=script)
    )
    await until(lambda: provider.started == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert provider.aborted == 1
