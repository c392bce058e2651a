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

Tool calls. The calls the assistant made and their results are transcript lines too::

    User: What time is it in UTC?
    Assistant looked up current_time {"timezone": "UTC"}: {"time": "14:05", "timezone": "UTC"}
    Assistant:

(a call and its result on one line, both compacted to one line and cut at
:data:`TOOL_ARGUMENTS_CHARS` / :data:`TOOL_RESULT_CHARS`; a conversation with results also gets
an example of one, :data:`TOOL_FEW_SHOT`).

Whether to call a tool is a separate *decision* prompt (:func:`render`'s ``tools``): the same
transcript without its final ``Assistant:``, then a short document of tool choices the model
continues. Its worked examples use made-up tools (:data:`DECISION_EXAMPLES`); then come the real
tools, the exchange being decided (the last user message and anything after it) and the cue::

    ...
    User: What time is it in UTC?

    Before answering, the assistant decides whether a tool would help, in JSON:
    Tools: stock_price (the price of a company's stock; arguments: company (string)), ...
    User: What is the stock price of Apple?
    Assistant (JSON tool choice): {"tool": "stock_price", "arguments": {"company": "Apple"}}
    User: Who wrote Hamlet?
    Assistant (JSON tool choice): {"tool": "none"}
    ...
    Tools: current_time (returns the current time in a timezone; arguments: timezone \
(string)), none (answer directly).
    User: What time is it in UTC?
    Assistant (JSON tool choice):

The caller constrains the JSON with a grammar (:func:`decision_schema`), so the examples only
have to teach the *choice*. Tried on Gemma 3 270M against a plain tool list with an instruction
(which chose "none" for every question) and tool lists in the header: this layout chose the
matching tool most often, though far from always (see the local provider's tests). The decision
prompt extends the answer prompt's text up to its last message, so llama.cpp reuses the
evaluated prefix when the answer follows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import Message, ToolCallRequest, ToolSpec

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

# With tool results in the transcript, the 270M model copied the call lines instead of answering
# until one example showed a result turned into an answer; tried against "Tool NAME: RESULT" and
# "Result of NAME: RESULT" lines, this layout read the results best.
TOOL_FEW_SHOT: tuple[str, ...] = (
    "User: How much is one Apple share?",
    'Assistant looked up stock_price {"company": "Apple"}: {"company": "Apple", "price_usd":'
    " 227.5}",
    "Assistant: One Apple share costs 227.50 US dollars.",
)

TOOL_RESULT_CHARS = 600
"""A tool result longer than this is cut (about 150-200 tokens of the 2048-token window)."""
TOOL_ARGUMENTS_CHARS = 300
"""The same for the arguments of a call the assistant made."""
TOOL_DESCRIPTION_CHARS = 200

DECISION_CUE = "Assistant (JSON tool choice):"
DECISION_INTRO = "Before answering, the assistant decides whether a tool would help, in JSON:"
NO_TOOL = "none"
"""The ``tool`` of the decision that calls none."""
DECISION_EXAMPLES: tuple[str, ...] = (
    "Tools: stock_price (the price of a company's stock; arguments: company (string)),"
    " translate_text (translates a text into another language; arguments: text (string),"
    " language (string)), none (answer directly).",
    "User: What is the stock price of Apple?",
    f'{DECISION_CUE} {{"tool": "stock_price", "arguments": {{"company": "Apple"}}}}',
    'Assistant looked up stock_price {"company": "Apple"}: {"company": "Apple", "price_usd":'
    " 227.5}",
    f'{DECISION_CUE} {{"tool": "{NO_TOOL}"}}',
    "User: Who wrote Hamlet?",
    f'{DECISION_CUE} {{"tool": "{NO_TOOL}"}}',
    "User: Translate thank you into Spanish.",
    f'{DECISION_CUE} {{"tool": "translate_text", "arguments": {{"text": "thank you",'
    ' "language": "Spanish"}}',
)
"""Worked tool choices with made-up tools: a call, then "none" once its result is in (without
that example the model called its tool again after every result), a direct answer, a call with
two arguments. (Ordered so; with the direct answer first the model chose "none" more often.)"""


def render(
    messages: Sequence[Message],
    *,
    preamble: str = PREAMBLE,
    tools: Sequence[ToolSpec] = (),
    tool_required: bool = False,
) -> str:
    """The prompt for ``messages``, ending with ``"Assistant:"`` (no trailing space, so the
    model's first token carries the space; callers strip it). With ``tools``: the decision
    prompt instead, ending with :data:`DECISION_CUE` (see the module docstring); with
    ``tool_required`` it does not offer "none".

    System messages extend the preamble (a route's system prompt adds to the framing rather than
    replacing it: without the "conversation with a helpful assistant" line the 270M model stops
    answering like one). Newlines inside a message are kept, but a blank line inside one is
    folded to a single newline so the few-shot layout stays unambiguous. A conversation with
    tool results gets one more example exchange, :data:`TOOL_FEW_SHOT`.
    """
    system = [_one_paragraph(m.content) for m in messages if m.role == "system" and m.content]
    head = " ".join([preamble, *system]).strip()
    lines = [head, ""]
    lines.extend(_lines(FEW_SHOT))
    conversation = [m for m in messages if m.role != "system"]
    if any(m.role == "tool" for m in conversation):
        lines.extend(TOOL_FEW_SHOT)
    lines.extend(_lines(conversation))
    if tools:
        lines.extend(_decision_lines(conversation, tools, required=tool_required))
    else:
        lines.append("Assistant:")
    return "\n".join(lines)


def _lines(conversation: Sequence[Message]) -> list[str]:
    """The transcript lines of ``conversation`` (no system messages). A call and its result
    are one line, at the result; a call without a result, a line of its own."""
    calls = {c.call_id: c for m in conversation for c in m.tool_calls if m.role == "assistant"}
    answered = {m.tool_call_id for m in conversation if m.role == "tool"}
    lines: list[str] = []
    for message in conversation:
        if message.role == "tool":
            call = calls.get(message.tool_call_id or "")
            name = _name(message.name or (call.name if call else "a tool"))
            arguments = f" {_arguments(call)}" if call else ""
            result = _compact(message.content, TOOL_RESULT_CHARS)
            lines.append(f"Assistant looked up {name}{arguments}: {result}")
            continue
        if message.role == "assistant" and message.tool_calls:
            if message.content.strip():
                lines.append(f"Assistant: {_one_paragraph(message.content)}")
            lines.extend(
                f"Assistant looked up {_name(call.name)} {_arguments(call)}."
                for call in message.tool_calls
                if call.call_id not in answered
            )
            continue
        lines.append(f"{_SPEAKERS[message.role]}: {_one_paragraph(message.content)}")
    return lines


def _arguments(call: ToolCallRequest) -> str:
    return _compact(call.arguments or "{}", TOOL_ARGUMENTS_CHARS)


def _decision_lines(
    conversation: Sequence[Message], tools: Sequence[ToolSpec], *, required: bool
) -> list[str]:
    """The lines after the transcript in a decision prompt (see the module docstring)."""
    users = [i for i, m in enumerate(conversation) if m.role == "user"]
    current = conversation[users[-1] :] if users else conversation[-1:]
    return [
        "",
        DECISION_INTRO,
        *DECISION_EXAMPLES,
        _tool_list([(tool.name, tool.description, tool.parameters) for tool in tools], required),
        *_lines(current),
        DECISION_CUE,
    ]


def _tool_list(tools: Sequence[tuple[str, str, Mapping[str, Any]]], required: bool = False) -> str:
    parts = []
    for name, description, parameters in tools:
        about = _cut(" ".join(description.split()).rstrip("."), TOOL_DESCRIPTION_CHARS)
        if about[:1].isupper() and not about[1:2].isupper():
            about = about[0].lower() + about[1:]  # it continues the sentence
        arguments = _argument_summary(parameters)
        if arguments:
            about = f"{about}; arguments: {arguments}" if about else f"arguments: {arguments}"
        parts.append(f"{_name(name)} ({about})" if about else _name(name))
    if not required:
        parts.append(f"{NO_TOOL} (answer directly)")
    return f"Tools: {', '.join(parts)}."


def _argument_summary(parameters: Mapping[str, Any]) -> str:
    properties = parameters.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return ""
    required = parameters.get("required")
    needed = set(required) if isinstance(required, list) else set()
    parts = []
    for name, schema in properties.items():
        kind = schema.get("type") if isinstance(schema, Mapping) else None
        if isinstance(schema, Mapping) and isinstance(schema.get("enum"), list):
            kind = " or ".join(json.dumps(v) for v in schema["enum"][:8])
        notes = [str(kind)] if isinstance(kind, str) else []
        if name not in needed:
            notes.append("optional")
        parts.append(f"{name} ({', '.join(notes)})" if notes else str(name))
    return ", ".join(parts)


def decision_schema(tools: Sequence[ToolSpec], *, required: bool = False) -> dict[str, Any]:
    """The JSON Schema of a tool decision: ``{"tool": NAME, "arguments": {...}}`` with each
    tool's own argument schema, or ``{"tool": "none"}`` unless a call is ``required``.

    An argument schema that leaves ``additionalProperties`` open is closed here: a small model
    offered "anything else" writes anything else."""
    branches: list[dict[str, Any]] = []
    definitions: dict[str, Any] = {}
    for tool in tools:
        parameters = dict(tool.parameters) or {"type": "object"}
        # "#/$defs/..." references resolve against the root: the definitions move there.
        for name, schema in dict(parameters.pop("$defs", None) or {}).items():
            definitions.setdefault(name, schema)
        if parameters.get("type") == "object" and "additionalProperties" not in parameters:
            parameters["additionalProperties"] = False
        branches.append(
            {
                "type": "object",
                "properties": {"tool": {"const": tool.name}, "arguments": parameters},
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
        )
    if not required:
        branches.append(
            {
                "type": "object",
                "properties": {"tool": {"const": NO_TOOL}},
                "required": ["tool"],
                "additionalProperties": False,
            }
        )
    return {"anyOf": branches, "$defs": definitions} if definitions else {"anyOf": branches}


def _name(name: str) -> str:
    return " ".join(name.split()) or "tool"


def _compact(text: str, limit: int) -> str:
    """``text`` on one line: JSON re-written compactly, anything else with its whitespace
    folded; cut at ``limit`` characters."""
    try:
        one_line = json.dumps(json.loads(text), ensure_ascii=False)
    except ValueError:
        one_line = " ".join(text.split())
    return _cut(one_line, limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 13].rstrip() + " …(truncated)"


def render_extraction(messages: Sequence[Message]) -> str:
    """The prompt of an extraction call: the messages as one plain document, ending with
    ``"JSON:"`` for the model to continue. A base model completes a document better than it
    follows an instruction, and the JSON-schema grammar then keeps its output valid JSON."""
    text = "\n".join(m.content.strip() for m in messages if m.content.strip())
    if not text.rstrip().endswith("JSON:"):
        text += "\nJSON:"
    return text


def render_continuation(
    continues: Sequence[Message], messages: Sequence[Message], schema: Mapping[str, Any]
) -> str:
    """The prompt of an extraction call that follows an answer (sequential extraction), as a
    continuation of the answering transcript: the answer's own prompt (:func:`render` of the
    conversation, so its tokens are those the model just evaluated), the answer, a blank line,
    one instruction naming the schema's fields, and ``"JSON:"``.

    ``continues`` is the request's: the conversation, then the answer as its last, assistant
    message. Only the instruction and the cue are new to the model: llama.cpp reuses the rest
    of its context, so the call evaluates a few dozen tokens instead of the whole document.
    ``messages`` past the first (a re-ask: the previous output and what was wrong with it)
    follow the instruction, as in :func:`render_extraction`.
    """
    *conversation, answer = continues
    properties = schema.get("properties")
    names = ", ".join(properties) if isinstance(properties, Mapping) else ""
    what = f"the fields {names}" if names else "the data"
    lines = [
        f"{render(conversation)} {_one_paragraph(answer.content)}",
        "",
        f"Extract {what} of the conversation above as JSON.",
    ]
    lines.extend(m.content.strip() for m in messages[1:] if m.content.strip())
    lines.append("JSON:")
    return "\n".join(lines)


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
    tools: Sequence[ToolSpec] = (),
    tool_required: bool = False,
) -> FittedPrompt:
    """Render ``messages`` (with ``tools``: the decision prompt, see :func:`render`) so that
    prompt + answer fit in ``n_ctx`` tokens.

    The policy, in order: keep every message if prompt + ``max_tokens`` fits; otherwise drop the
    oldest non-system messages (never the system prompt, never the last message) until the
    prompt leaves room for ``min(max_tokens, n_ctx // 2)`` tokens; then cap ``max_tokens`` to the
    room that is left. Protecting only half the window means an oversized ``max_tokens`` (say
    32k against a 2k window) costs the answer budget, not the conversation, while a long history
    cannot squeeze the answer below half the window either. Raises :class:`PromptTooLong` if not
    even one answer token fits.

    In a tool loop the last message is a tool result: then the last user message and everything
    after it (the calls and their results) are kept like the last message, and history is never
    cut so that it starts with a tool result whose call was dropped.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    reserve = min(max_tokens, n_ctx // 2)
    system = [m for m in messages if m.role == "system"]
    history = [m for m in messages if m.role != "system"]
    keep_from = _protected_tail(history)
    dropped = 0
    while True:
        kept = [*system, *history[dropped:]]
        prompt = render(kept, preamble=preamble, tools=tools, tool_required=tool_required)
        prompt_tokens = count_tokens(prompt)
        if prompt_tokens + max_tokens <= n_ctx:
            return FittedPrompt(prompt, prompt_tokens, max_tokens, dropped)
        if prompt_tokens + reserve <= n_ctx or dropped >= keep_from:
            break
        dropped += 1
        while dropped < keep_from and history[dropped].role == "tool":
            dropped += 1  # the call it answers is gone: a result alone only confuses
    room = n_ctx - prompt_tokens
    if room < 1:
        raise PromptTooLong(
            f"the prompt needs {prompt_tokens} tokens but the context window holds {n_ctx}"
        )
    return FittedPrompt(prompt, prompt_tokens, min(max_tokens, room), dropped)


def _protected_tail(history: Sequence[Message]) -> int:
    """Where the messages that are never dropped start: the last one, or, when it is a tool
    result, the last user message before it (what the results answer)."""
    last = len(history) - 1
    if last < 0 or history[last].role != "tool":
        return max(last, 0)
    for index in range(last, -1, -1):
        if history[index].role == "user":
            return index
    return last


def _one_paragraph(text: str) -> str:
    # A blank line inside a message would read, to the model, like the end of the transcript.
    while "\n\n" in text:
        text = text.replace("\n\n", "\n")
    return text.strip()
