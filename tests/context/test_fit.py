"""fit_context, sans-I/O: history in, the messages to send and the report out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenwire.context import (
    ContextSummary,
    ContextTooLong,
    EstimateCounter,
    HistoryTurn,
    TiktokenCounter,
    fit_context,
)
from tokenwire.providers import Message

SYSTEM = (Message("system", "Be brief."),)


@dataclass
class WordCounter:
    """Additive and easy to reckon with: 5 tokens of framing, then 1 + words per message.
    ``surcharge`` adds tokens to any prompt of more than ``surcharge_over`` messages, as a
    tokenizer merging across message boundaries would: the per-turn sums then fall short."""

    name: str = "words"
    surcharge: int = 0
    surcharge_over: int = 0
    calls: list[int] = field(default_factory=list)
    """How many messages each count() was given."""

    def count(self, messages: Sequence[Message]) -> int:
        self.calls.append(len(messages))
        tokens = 5 + sum(1 + len(m.content.split()) for m in messages)
        if self.surcharge and len(messages) > self.surcharge_over:
            tokens += self.surcharge
        return tokens


def words(n: int, word: str = "w") -> str:
    return " ".join([word] * n)


def turn(i: int, size: int = 8) -> HistoryTurn:
    """A turn of 2 + 2 * size tokens for WordCounter."""
    return HistoryTurn(
        f"s{i}", (Message("user", words(size, f"q{i}")), Message("assistant", words(size, f"a{i}")))
    )


def new(text: str = "and now?") -> tuple[Message, ...]:
    return (Message("user", text),)


def test_a_conversation_that_fits_is_sent_whole_after_one_count() -> None:
    counter = WordCounter()
    history = [turn(i) for i in range(3)]
    fit = fit_context(SYSTEM, history, new(), counter=counter, window=1000, reserve_output=100)
    assert fit.messages == (*SYSTEM, *(m for t in history for m in t.messages), *new())
    assert counter.calls == [len(fit.messages)]
    assert fit.report == {
        "counter": "words",
        "window": 1000,
        "reserve_output": 100,
        "budget": 900,
        "prompt_tokens": 5 + (1 + 2) + 3 * 18 + (1 + 2),
        "history_turns": 3,
        "kept_turns": 3,
        "dropped": [],
        "summarized": [],
    }
    assert not fit.trimmed


def test_the_oldest_whole_turns_go_first() -> None:
    history = [turn(i) for i in range(10)]  # 18 tokens each
    # Budget 100: framing 5, system 3, new 3 leave 89: four turns (72), not five (90).
    fit = fit_context(SYSTEM, history, new(), counter=WordCounter(), window=150, reserve_output=50)
    assert fit.kept == ("s6", "s7", "s8", "s9")
    assert fit.dropped == ("s0", "s1", "s2", "s3", "s4", "s5")
    assert fit.messages == (*SYSTEM, *(m for t in history[6:] for m in t.messages), *new())
    assert fit.prompt_tokens == 5 + 3 + 72 + 3 <= fit.budget == 100
    report = fit.report
    assert (report["kept_turns"], report["dropped"]) == (4, ["s0", "s1", "s2", "s3", "s4", "s5"])
    assert json.loads(json.dumps(report)) == report
    assert fit.trimmed


def test_a_turn_is_never_split_from_its_answer() -> None:
    history = [turn(0, size=2), turn(1, size=30)]  # the newest alone does not fit
    fit = fit_context(SYSTEM, history, new(), counter=WordCounter(), window=60, reserve_output=10)
    assert fit.kept == ()
    assert fit.dropped == ("s0", "s1")  # s0 would fit, but not without the newer s1
    assert fit.messages == (*SYSTEM, *new())


def test_system_messages_are_never_dropped_and_come_first() -> None:
    big_system = (Message("system", words(60)),)
    request = (Message("system", "Answer in French."), Message("user", "and now?"))
    history = [turn(i) for i in range(5)]
    fit = fit_context(
        big_system, history, request, counter=WordCounter(), window=120, reserve_output=20
    )
    assert fit.messages[:2] == (*big_system, request[0])
    assert fit.messages[-1] == request[1]
    assert all(m.role != "system" for m in fit.messages[2:])
    assert fit.kept == ("s4",)  # 100 - (5 + 61 + 4 + 3) = 27 leaves room for one turn


def test_new_messages_that_cannot_fit_are_the_requests_fault() -> None:
    counter = WordCounter()
    with pytest.raises(ContextTooLong) as caught:
        fit_context(
            SYSTEM, [turn(0)], new(words(200)), counter=counter, window=150, reserve_output=50
        )
    error = caught.value
    assert (error.code, error.required, error.budget, error.window) == (
        "context_too_long",
        5 + 3 + 201,
        100,
        150,
    )
    assert "209 prompt tokens" in str(error) and "leaves 100" in str(error)


def test_the_answer_room_must_leave_a_budget() -> None:
    with pytest.raises(ValueError, match="leaves no room"):
        fit_context(SYSTEM, [], new(), counter=WordCounter(), window=100, reserve_output=100)
    with pytest.raises(ValueError, match="system messages only"):
        fit_context(new(), [], new(), counter=WordCounter(), window=100, reserve_output=10)


def test_a_turn_holds_no_system_message() -> None:
    with pytest.raises(ValueError, match="system"):
        HistoryTurn("s0", (Message("system", "x"), Message("user", "y")))
    with pytest.raises(ValueError, match="no messages"):
        HistoryTurn("s0", ())


def test_a_summary_stands_in_for_the_turns_it_covers_once_they_are_all_dropped() -> None:
    history = [turn(i) for i in range(10)]
    summary = ContextSummary(words(20, "fact"), covers=("s0", "s1", "s2", "s3"))
    # Without the summary s6..s9 fit (72 of the 89 left); the summary (1 + 5 + 20 = 26) fits
    # beside them only once s6 goes too.
    fit = fit_context(
        SYSTEM,
        history,
        new(),
        counter=WordCounter(),
        window=150,
        reserve_output=50,
        summary=summary,
    )
    assert fit.summarized == ("s0", "s1", "s2", "s3")
    assert fit.messages[1] == summary.as_message()
    assert fit.messages[1].role == "system"
    assert summary.text in fit.messages[1].content
    assert fit.kept == ("s7", "s8", "s9")
    assert fit.dropped == ("s0", "s1", "s2", "s3", "s4", "s5", "s6")
    assert fit.prompt_tokens <= fit.budget
    assert fit.report["summarized"] == ["s0", "s1", "s2", "s3"]


def test_a_summary_is_not_sent_beside_a_turn_it_covers() -> None:
    history = [turn(i) for i in range(10)]
    summary = ContextSummary("...", covers=("s0", "s1", "s7"))
    fit = fit_context(
        SYSTEM,
        history,
        new(),
        counter=WordCounter(),
        window=150,
        reserve_output=50,
        summary=summary,
    )
    assert fit.kept == ("s6", "s7", "s8", "s9")
    assert fit.summarized == ()
    assert all(m != summary.as_message() for m in fit.messages)


def test_a_summary_of_turns_older_than_the_history_is_sent_when_it_fits() -> None:
    history = [turn(i) for i in range(10, 13)]
    summary = ContextSummary(
        "The first ten turns, in short.", covers=tuple(f"s{i}" for i in range(10))
    )
    fit = fit_context(
        SYSTEM,
        history,
        new(),
        counter=WordCounter(),
        window=1000,
        reserve_output=50,
        summary=summary,
    )
    assert fit.messages[1] == summary.as_message()
    assert fit.kept == ("s10", "s11", "s12")
    assert fit.dropped == ()


def test_a_summary_that_does_not_fit_is_left_out() -> None:
    history = [turn(i) for i in range(10)]
    summary = ContextSummary(words(120), covers=("s0",))
    fit = fit_context(
        SYSTEM,
        history,
        new(),
        counter=WordCounter(),
        window=150,
        reserve_output=50,
        summary=summary,
    )
    assert fit.summarized == ()
    assert fit.kept == ("s6", "s7", "s8", "s9")


def test_when_the_whole_costs_more_than_its_parts_more_turns_go() -> None:
    # Every prompt of more than 6 messages costs 40 more than its parts add up to.
    counter = WordCounter(surcharge=40, surcharge_over=6)
    history = [turn(i) for i in range(10)]
    fit = fit_context(SYSTEM, history, new(), counter=counter, window=150, reserve_output=50)
    # The sums choose s6..s9 (83 tokens, 10 messages), which really cost 123; without s6 the
    # prompt costs 105, still over; without s7 too it is 47 (6 messages, no surcharge).
    assert fit.kept == ("s8", "s9")
    assert fit.prompt_tokens == counter.count(fit.messages) <= 100


def test_a_long_history_is_not_recounted_whole_per_dropped_turn() -> None:
    counter = WordCounter()
    history = [turn(i) for i in range(500)]
    fit = fit_context(SYSTEM, history, new(), counter=counter, window=400, reserve_output=100)
    assert len(fit.kept) == 16  # 289 tokens of room, 18 per turn
    # One count of everything, then the fixed part, the framing, the 17 newest turns one by
    # one, and the prompt chosen: about one whole history's worth of messages in all, where
    # dropping turn by turn would have counted ~484 prompts of up to 1000 messages.
    assert len(counter.calls) == 1 + 2 + 17 + 1
    assert sum(counter.calls) < 2 * 1000 + 100


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40), max_size=30),
    budget=st.integers(min_value=20, max_value=600),
)
def test_keeps_the_longest_suffix_that_fits(sizes: list[int], budget: int) -> None:
    history = [turn(i, size) for i, size in enumerate(sizes)]
    counter = WordCounter()
    fit = fit_context(
        SYSTEM, history, new(), counter=counter, window=budget + 10, reserve_output=10
    )
    start = len(history) - len(fit.kept)
    assert fit.kept == tuple(t.stream_id for t in history[start:])
    assert fit.dropped == tuple(t.stream_id for t in history[:start])
    assert fit.prompt_tokens == counter.count(fit.messages) <= budget
    if start > 0:  # one more turn would not have fit
        longer = (*SYSTEM, *(m for t in history[start - 1 :] for m in t.messages), *new())
        assert counter.count(longer) > budget


@pytest.mark.parametrize("counter", [TiktokenCounter("o200k_base"), EstimateCounter()])
def test_real_counters_fit_within_the_budget(counter: TiktokenCounter | EstimateCounter) -> None:
    history = [
        HistoryTurn(
            f"s{i}",
            (
                Message("user", f"Question {i}: what is {i} times {i + 1}?"),
                Message("assistant", f"{i} times {i + 1} is {i * (i + 1)}."),
            ),
        )
        for i in range(200)
    ]
    fit = fit_context(SYSTEM, history, new(), counter=counter, window=2048, reserve_output=256)
    assert 0 < len(fit.kept) < 200
    assert fit.kept[-1] == "s199"
    assert fit.prompt_tokens == counter.count(fit.messages) <= 2048 - 256
    assert fit.report["counter"] == counter.name
