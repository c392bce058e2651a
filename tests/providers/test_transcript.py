"""The completion transcript for base models: layout, stop sequences, fitting into n_ctx."""

from __future__ import annotations

import pytest

from tokenwire.providers.base import Message
from tokenwire.providers.transcript import (
    FEW_SHOT,
    PREAMBLE,
    STOP_SEQUENCES,
    PromptTooLong,
    fit_prompt,
    render,
    stop_sequences,
)


def words(text: str) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return len(text.split())


FEW_SHOT_LINES = [f"{'User' if m.role == 'user' else 'Assistant'}: {m.content}" for m in FEW_SHOT]


def test_render_layout() -> None:
    prompt = render(
        [Message("user", "Hi there?"), Message("assistant", "Hello."), Message("user", "Bye?")]
    )
    assert prompt.splitlines() == [
        PREAMBLE,
        "",
        *FEW_SHOT_LINES,
        "User: Hi there?",
        "Assistant: Hello.",
        "User: Bye?",
        "Assistant:",
    ]
    assert len(FEW_SHOT) == 4  # two exchanges


def test_system_messages_extend_the_preamble() -> None:
    prompt = render([Message("system", "Answer like a pirate."), Message("user", "Hi")])
    assert prompt.splitlines()[0] == f"{PREAMBLE} Answer like a pirate."
    assert "Answer like a pirate" not in "\n".join(prompt.splitlines()[1:])


def test_preamble_can_be_replaced() -> None:
    assert render([Message("user", "Hi")], preamble="Chat log.").startswith("Chat log.\n\n")


def test_blank_lines_inside_messages_cannot_end_the_transcript() -> None:
    prompt = render([Message("user", "line one\n\n\nline two  ")])
    body = prompt.split("\n\n", 1)[1]  # everything after the preamble's blank line
    assert "\n\n" not in body
    assert "User: line one\nline two\nAssistant:" in body


def test_stop_sequences_merge_without_duplicates() -> None:
    assert STOP_SEQUENCES == ("\nUser:", "\n\n")
    assert stop_sequences() == ["\nUser:", "\n\n"]
    assert stop_sequences(["END", "\n\n", "", "END"]) == ["\nUser:", "\n\n", "END"]


def history(n: int) -> list[Message]:
    return [
        Message("user" if i % 2 == 0 else "assistant", f"message {i} " + "w " * 20)
        for i in range(n)
    ]


def test_fit_keeps_everything_when_it_fits() -> None:
    messages = [Message("system", "Be brief."), *history(5)]
    fitted = fit_prompt(messages, max_tokens=50, n_ctx=10_000, count_tokens=words)
    assert fitted.dropped == 0
    assert fitted.max_tokens == 50
    assert fitted.prompt == render(messages)
    assert fitted.prompt_tokens == words(fitted.prompt)


def test_fit_drops_oldest_history_but_keeps_system_and_last_message() -> None:
    messages = [Message("system", "Be brief."), *history(9)]
    full = words(render(messages))
    n_ctx = full - 30 + 100  # 100 answer tokens; the prompt must lose ~30 words (two messages)
    fitted = fit_prompt(messages, max_tokens=100, n_ctx=n_ctx, count_tokens=words)
    assert fitted.dropped == 2
    assert fitted.max_tokens == 100
    assert fitted.prompt_tokens + fitted.max_tokens <= n_ctx
    assert "Be brief." in fitted.prompt
    assert "message 0 " not in fitted.prompt and "message 1 " not in fitted.prompt
    assert "message 2 " in fitted.prompt and "message 8 " in fitted.prompt


def test_fit_caps_an_oversized_max_tokens_instead_of_dropping_history() -> None:
    messages = history(3)
    prompt_tokens = words(render(messages))
    n_ctx = 4 * prompt_tokens  # the prompt takes a quarter: less than the protected half
    fitted = fit_prompt(messages, max_tokens=1_000_000, n_ctx=n_ctx, count_tokens=words)
    assert fitted.dropped == 0
    assert fitted.max_tokens == n_ctx - prompt_tokens


def test_fit_caps_max_tokens_when_only_the_last_message_is_left() -> None:
    messages = [Message("system", "Be brief."), *history(4), Message("user", "q " * 200)]
    last_only = words(render([messages[0], messages[-1]]))
    n_ctx = last_only + 10
    fitted = fit_prompt(messages, max_tokens=100, n_ctx=n_ctx, count_tokens=words)
    assert fitted.dropped == 4
    assert fitted.max_tokens == 10
    assert "Be brief." in fitted.prompt


def test_fit_raises_when_no_answer_token_fits() -> None:
    messages = [Message("user", "q " * 500)]
    with pytest.raises(PromptTooLong):
        fit_prompt(messages, max_tokens=10, n_ctx=100, count_tokens=words)
