"""The completion prompt for a base (not instruction-tuned) model, such as Gemma 3 270M.

A base model does not follow chat templates (see NOTES: with Gemma's template the 270M model
babbles), but it continues documents well. So a conversation is written as a short transcript
it can continue::

    The following is a conversation with a helpful assistant that answers clearly and briefly.

    User: What is the capital of France?
    Assistant: The capital of France is Paris.
    User: ...
    Assistant: ...
    User: {the conversation's messages, one line per turn}
    Assistant:

and generation stops at :data:`STOP_SEQUENCES` (the model starting the next ``User:`` line, or
a blank line, past which it drifts into unrelated text). Everything here is pure: strings in,
strings out; the token counter for :func:`fit_prompt` is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .base import Message

PREAMBLE = (
    "The following is a conversation with a helpful assistant that answers clearly and briefly."
)

# Two short exchanges set the register: a one-line fact, then an enumerated answer. Tried on the
# real model against a "study tips" and a "why" example; this pair gave the most useful answers
# to list-style questions ("three tips for ...") without making factual ones longer.
FEW_SHOT: tuple[Message, ...] = (
    Message("user", "What is the capital of France?"),
    Message("assistant", "The capital of France is Paris."),
    Message("user", "Give me two tips for sleeping better."),
    Message(
        "assistant",
        "First, go to bed at the same time every night. Second, keep screens out of the bedroom.",
    ),
)

STOP_SEQUENCES: tuple[str, ...] = ("\nUser:", "\n\n")

_SPEAKERS = {"user": "User", "assistant": "Assistant", "tool": "Tool"}


def render(messages: Sequence[Message], *, preamble: str = PREAMBLE) -> str:
    """The prompt for ``messages``, ending with ``"Assistant:"`` (no trailing space, so the
    model's first token carries the space; callers strip it).

    System messages extend the preamble (a route's system prompt adds to the framing rather than
    replacing it: without the "conversation with a helpful assistant" line the 270M model stops
    answering like one). Newlines inside a message are kept, but a blank line inside one is
    folded to a single newline so the few-shot layout stays unambiguous.
    """
    system = [_one_paragraph(m.content) for m in messages if m.role == "system" and m.content]
    head = " ".join([preamble, *system]).strip()
    lines = [head, ""]
    for message in (*FEW_SHOT, *(m for m in messages if m.role != "system")):
        lines.append(f"{_SPEAKERS[message.role]}: {_one_paragraph(message.content)}")
    lines.append("Assistant:")
    return "\n".join(lines)


def render_extraction(messages: Sequence[Message]) -> str:
    """The prompt of an extraction call: the messages as one plain document, ending with
    ``"JSON:"`` for the model to continue. A base model completes a document better than it
    follows an instruction, and the JSON-schema grammar then keeps its output valid JSON."""
    text = "\n".join(m.content.strip() for m in messages if m.content.strip())
    if not text.rstrip().endswith("JSON:"):
        text += "\nJSON:"
    return text


def stop_sequences(extra: Sequence[str] = ()) -> list[str]:
    """:data:`STOP_SEQUENCES` plus the request's own, without duplicates or empty strings."""
    merged: list[str] = []
    for stop in (*STOP_SEQUENCES, *extra):
        if stop and stop not in merged:
            merged.append(stop)
    return merged


@dataclass(frozen=True, slots=True)
class FittedPrompt:
    """A prompt that fits the context window, and the answer budget left for it."""

    prompt: str
    prompt_tokens: int
    max_tokens: int
    dropped: int
    """How many of the oldest conversation messages were left out to make it fit."""


class PromptTooLong(ValueError):
    """Even the system prompt and the last message leave no room for an answer."""


def fit_prompt(
    messages: Sequence[Message],
    *,
    max_tokens: int,
    n_ctx: int,
    count_tokens: Callable[[str], int],
    preamble: str = PREAMBLE,
) -> FittedPrompt:
    """Render ``messages`` so that prompt + answer fit in ``n_ctx`` tokens.

    The policy, in order: keep every message if prompt + ``max_tokens`` fits; otherwise drop the
    oldest non-system messages (never the system prompt, never the last message) until the
    prompt leaves room for ``min(max_tokens, n_ctx // 2)`` tokens; then cap ``max_tokens`` to the
    room that is left. Protecting only half the window means an oversized ``max_tokens`` (say
    32k against a 2k window) costs the answer budget, not the conversation, while a long history
    cannot squeeze the answer below half the window either. Raises :class:`PromptTooLong` if not
    even one answer token fits.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    reserve = min(max_tokens, n_ctx // 2)
    system = [m for m in messages if m.role == "system"]
    history = [m for m in messages if m.role != "system"]
    dropped = 0
    while True:
        prompt = render([*system, *history[dropped:]], preamble=preamble)
        prompt_tokens = count_tokens(prompt)
        if prompt_tokens + max_tokens <= n_ctx:
            return FittedPrompt(prompt, prompt_tokens, max_tokens, dropped)
        if prompt_tokens + reserve <= n_ctx or dropped >= len(history) - 1:
            break
        dropped += 1
    room = n_ctx - prompt_tokens
    if room < 1:
        raise PromptTooLong(
            f"the prompt needs {prompt_tokens} tokens but the context window holds {n_ctx}"
        )
    return FittedPrompt(prompt, prompt_tokens, min(max_tokens, room), dropped)


def _one_paragraph(text: str) -> str:
    # A blank line inside a message would read, to the model, like the end of the transcript.
    while "\n\n" in text:
        text = text.replace("\n\n", "\n")
    return text.strip()
