"""The completion transcript for base models: layout, stop sequences, fitting into n_ctx."""

from __future__ import annotations

import pytest

from tokenwire.providers.base import Message, ToolCallRequest, ToolSpec
from tokenwire.providers.transcript import (
    DECISION_CUE,
    DECISION_EXAMPLES,
    FEW_SHOT,
    PREAMBLE,
    STOP_SEQUENCES,
    TOOL_FEW_SHOT,
    TOOL_RESULT_CHARS,
    PromptTooLong,
    decision_schema,
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


CLOCK = ToolSpec(
    "current_time",
    "Returns the current time in a timezone.",
    {
        "type": "object",
        "properties": {"timezone": {"type": "string"}, "format": {"enum": ["12h", "24h"]}},
        "required": ["timezone"],
    },
)
CALL = ToolCallRequest("call_1", "current_time", '{"timezone":\n  "UTC"}')
LOOP = [
    Message("user", "What time is it in UTC?"),
    Message("assistant", "", tool_calls=(CALL,)),
    Message(
        "tool", '{"time": "14:05",\n "timezone": "UTC"}', tool_call_id="call_1", name="current_time"
    ),
]


def test_a_call_and_its_result_are_one_transcript_line() -> None:
    lines = render(LOOP).splitlines()
    assert lines[-3:] == [
        "User: What time is it in UTC?",
        'Assistant looked up current_time {"timezone": "UTC"}: {"time": "14:05", "timezone":'
        ' "UTC"}',
        "Assistant:",
    ]
    # With a tool result in the conversation, one worked example of reading one comes first.
    assert "\n".join(TOOL_FEW_SHOT) in render(LOOP)
    assert "Assistant looked up" not in render(LOOP[:1])
    # Text before the calls is its own line; a call without a result yet, a line of its own.
    other = ToolCallRequest("call_2", "get_weather", '{"city": "Oslo"}')
    pending = Message("assistant", "Let me check.", tool_calls=(CALL, other))
    lines = render([LOOP[0], pending, LOOP[2]]).splitlines()
    assert lines[-4:-1] == [
        "Assistant: Let me check.",
        'Assistant looked up get_weather {"city": "Oslo"}.',
        'Assistant looked up current_time {"timezone": "UTC"}: {"time": "14:05", "timezone":'
        ' "UTC"}',
    ]


def test_a_long_tool_result_is_cut_to_one_line() -> None:
    result = Message("tool", "row\n\n" * 1000, tool_call_id="c", name="search")
    line = render([result]).splitlines()[-2]
    assert line.startswith("Assistant looked up search: row row") and line.endswith("…(truncated)")
    assert len(line) <= len("Assistant looked up search: ") + TOOL_RESULT_CHARS


def test_the_decision_prompt_extends_the_answer_prompt() -> None:
    answer = render(LOOP[:1])
    decision = render(LOOP[:1], tools=[CLOCK])
    assert decision.startswith(answer.removesuffix("Assistant:"))
    tail = decision.splitlines()[-3:]
    assert tail == [
        "Tools: current_time (returns the current time in a timezone; arguments: timezone"
        ' (string), format ("12h" or "24h", optional)), none (answer directly).',
        "User: What time is it in UTC?",
        DECISION_CUE,
    ]
    assert "\n".join(DECISION_EXAMPLES) in decision
    # Required: "none" is not offered. After results: the whole exchange is decided on.
    required = render(LOOP, tools=[CLOCK], tool_required=True).splitlines()
    assert required[-4].endswith("optional)).") and "none (answer" not in required[-4]
    assert required[-3:-1] == render(LOOP).splitlines()[-3:-1]


def test_the_decision_schema() -> None:
    schema = decision_schema([CLOCK])
    call, none = schema["anyOf"]
    assert call["properties"]["tool"] == {"const": "current_time"}
    assert call["properties"]["arguments"] == {**CLOCK.parameters, "additionalProperties": False}
    assert call["required"] == ["tool", "arguments"]
    assert none["properties"] == {"tool": {"const": "none"}}
    assert len(decision_schema([CLOCK], required=True)["anyOf"]) == 1


def test_fit_keeps_the_tool_loop_tail_and_never_starts_with_an_orphan_result() -> None:
    earlier = [
        Message("user", "first " + "w " * 40),
        Message("assistant", "", tool_calls=(CALL,)),
        Message("tool", '"' + "r " * 40 + '"', tool_call_id="call_1", name="current_time"),
        Message("assistant", "answer " + "w " * 40),
    ]
    messages = [*earlier, *LOOP]
    full = words(render(messages))
    # Room for everything but about 50 words: the first user message goes, and with it the call
    # and the result that followed it; the loop's tail (question, call, result) stays.
    fitted = fit_prompt(messages, max_tokens=100, n_ctx=full - 50 + 100, count_tokens=words)
    assert fitted.dropped == 3
    assert fitted.prompt == render(messages[3:])
    # However small the window, the last question and its results stay.
    tight = fit_prompt(messages, max_tokens=100, n_ctx=words(render(LOOP)) + 5, count_tokens=words)
    assert tight.dropped == 4 and tight.prompt == render(LOOP)
