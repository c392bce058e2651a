"""Summaries of earlier turns: the request that asks for one, and the background call.

Two forms of the same request, chosen by the provider as extraction chooses its prompt:

- for instruction-following models, chat messages: a system line saying what a good summary
  keeps, and the conversation to summarise;
- for the local base model (Gemma 3 270M), a document to continue. Asked in the chat
  transcript, the 270M model answers with an unrelated sentence ("I am a student at the
  University of Paris."); given two worked examples and a ``JSON:`` line, under the JSON-schema
  grammar (the local provider's extraction path), it writes a one-sentence summary. A rough
  one: it keeps some facts and loses others; a larger model summarises far better.

Either way it is a ``BACKGROUND`` call through the provider's scheduler, so it never delays an
interactive turn, and a summary cut short (no end marker, or ``max_tokens`` reached) is an
error rather than a summary: the missing part is unknown.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..output import parse_and_repair
from ..providers.base import (
    Finish,
    GenerationRequest,
    Message,
    Provider,
    ProviderError,
    TextChunk,
    UsageChunk,
)
from .fit import ContextSummary, HistoryTurn
from .tokens import EstimateCounter

if TYPE_CHECKING:
    from ..engine.scheduler import ProviderScheduler

SUMMARY_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {"summary": {"type": "string"}},
    "required": ["summary"],
    "additionalProperties": False,
}
"""The document form's answer: ``{"summary": "..."}``."""

MAX_QUOTED_CHARS = 1000
"""Each message is quoted up to this many characters: a summary needs the gist of a long
answer, not all of it, and the request must stay well inside a small model's window."""

_SYSTEM = (
    "You summarise conversations between a user and an assistant. Write a short, factual "
    "summary in two to four sentences: who the user is, what they asked for or decided, and "
    "what the assistant answered. Keep names, numbers and dates. Add nothing that is not in "
    "the conversation."
)

# The document form's worked examples. Two, on unrelated topics: with only one, the 270M model
# copied its facts into the summary (a gift "under 50 dollars" in a talk about Lisbon). With an
# earlier summary, the second example shows one carried into the new summary (without that,
# the model dropped it).
_EXAMPLE_1 = (
    "User: I need a gift for my sister, she loves hiking.\n"
    "Assistant: A light daypack or trekking poles make good gifts.\n"
    "User: My budget is 50 dollars.\n"
    "Assistant: Trekking poles fit that budget."
)
_EXAMPLE_1_SUMMARY = (
    "The user wants a hiking gift for a sister, under 50 dollars; the assistant suggested "
    "trekking poles."
)
_EXAMPLE_2 = (
    "User: What is the boiling point of water?\n"
    "Assistant: 100 degrees Celsius at sea level.\n"
    "User: And on a mountain?\n"
    "Assistant: Lower, because the air pressure is lower."
)
_EXAMPLE_2_SUMMARY = (
    "The user asked about the boiling point of water; the assistant said 100 degrees Celsius "
    "at sea level, lower on a mountain."
)
_EXAMPLE_2_EARLIER = "The user is learning to cook."
_EXAMPLE_2_SUMMARY_WITH_EARLIER = (
    "The user, who is learning to cook, asked about the boiling point of water; the assistant "
    "said 100 degrees Celsius at sea level, lower on a mountain."
)

_SPEAKERS = {"user": "User", "assistant": "Assistant", "tool": "Tool", "system": "System"}


class SummaryFailed(Exception):
    """No summary: ``code`` says why (``provider_error``, ``timeout``, ``truncated``: the stream
    ended without its end marker, ``length``: ``max_tokens`` was reached, ``invalid``: the
    answer holds no summary). ``retryable``: the same call may succeed later."""

    def __init__(self, message: str, *, code: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable


def summary_request(
    turns: Sequence[HistoryTurn],
    *,
    max_tokens: int,
    previous: ContextSummary | None = None,
    document: bool = False,
    script: Mapping[str, Any] | None = None,
) -> GenerationRequest:
    """The request for a summary of ``turns`` (oldest first), folding in ``previous`` (an
    earlier summary the new one replaces). ``document``: the base-model form, whose answer is
    ``{"summary": ...}`` (see :func:`summary_text`). ``script`` is for the scripted provider."""
    if not turns:
        raise ValueError("nothing to summarise")
    conversation = "\n".join(
        f"{_SPEAKERS[m.role]}: {_quote(m.content)}" for turn in turns for m in turn.messages
    )
    earlier = _quote(previous.text) if previous is not None else None
    if document:
        first = _shot(_EXAMPLE_1, _EXAMPLE_1_SUMMARY)
        if earlier is None:
            second = _shot(_EXAMPLE_2, _EXAMPLE_2_SUMMARY)
            current = f"Conversation:\n{conversation}\nJSON:"
        else:
            second = _shot(
                f"Earlier: {_EXAMPLE_2_EARLIER}\n{_EXAMPLE_2}", _EXAMPLE_2_SUMMARY_WITH_EARLIER
            )
            current = f"Conversation:\nEarlier: {earlier}\n{conversation}\nJSON:"
        messages: tuple[Message, ...] = (Message("user", "\n\n".join([first, second, current])),)
        schema: Mapping[str, Any] | None = SUMMARY_SCHEMA
    else:
        parts = ["Summarise this conversation."]
        if earlier is not None:
            parts.append(f"Summary of what came before it: {earlier}")
        parts.append(f"Conversation:\n{conversation}")
        messages = (Message("system", _SYSTEM), Message("user", "\n\n".join(parts)))
        schema = None
    return GenerationRequest(
        messages=messages,
        max_tokens=max_tokens,
        temperature=0.0,
        json_schema=schema,
        script=script,
    )


def summary_text(output: str, *, document: bool) -> str:
    """The summary in a model's answer to :func:`summary_request`. Raises
    :class:`SummaryFailed` (``invalid``) if there is none."""
    if document:
        outcome = parse_and_repair(output)
        data = outcome.data if outcome.ok else None
        text = data.get("summary") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise SummaryFailed(
                f"the answer holds no summary: {outcome.message or output[:200]!r}",
                code="invalid",
            )
    else:
        text = output
    text = " ".join(text.split())
    if not text:
        raise SummaryFailed("the summary is empty", code="invalid")
    return text


async def summarize(
    provider: Provider,
    scheduler: ProviderScheduler | None,
    turns: Sequence[HistoryTurn],
    *,
    max_tokens: int,
    timeout_s: float,
    previous: ContextSummary | None = None,
    script: Mapping[str, Any] | None = None,
) -> ContextSummary:
    """Summarise ``turns`` (and ``previous``) with one ``provider`` call at background priority
    in ``scheduler`` (when given). ``timeout_s`` bounds the whole of it, the wait for a slot
    included. The summary covers ``previous.covers`` and the turns' stream ids.

    Raises :class:`SummaryFailed`; cancelling the caller aborts the call."""
    # Imported here, not at the top: the engine imports this package, and importing any of its
    # modules from here first would run the engine package's __init__ half-way through ours.
    from ..engine.scheduler import Priority

    document = provider.kind == "local"
    request = summary_request(
        turns, max_tokens=max_tokens, previous=previous, document=document, script=script
    )
    earlier = previous.covers if previous is not None else ()
    covers = tuple(dict.fromkeys([*earlier, *(turn.stream_id for turn in turns)]))
    try:
        async with asyncio.timeout(timeout_s):
            if scheduler is None:
                output = await _generate(provider, request, None)
            else:
                estimate = EstimateCounter().count(request.messages) + max_tokens
                async with scheduler.slot(Priority.BACKGROUND, tokens=estimate) as grant:
                    output = await _generate(provider, request, grant.used)
    except TimeoutError:
        raise SummaryFailed(
            f"no summary from {provider.name} within {timeout_s:g} s", code="timeout"
        ) from None
    except ProviderError as exc:
        raise SummaryFailed(
            f"{provider.name} failed the summary: {exc.message}",
            code="provider_error",
            retryable=exc.retryable,
        ) from exc
    return ContextSummary(summary_text(output, document=document), covers)


async def _generate(
    provider: Provider, request: GenerationRequest, report_usage: Callable[[int], None] | None
) -> str:
    parts: list[str] = []
    finish: Finish | None = None
    stream = provider.stream(request)
    try:
        async for chunk in stream:
            if isinstance(chunk, TextChunk):
                parts.append(chunk.text)
            elif isinstance(chunk, UsageChunk) and report_usage is not None:
                report_usage(chunk.input_tokens + chunk.output_tokens)
            elif isinstance(chunk, Finish):
                finish = chunk
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    if finish is None:
        raise SummaryFailed(f"{provider.name} ended the summary early", code="truncated")
    if finish.reason == "length":
        raise SummaryFailed(
            f"the summary reached max_tokens={request.max_tokens} before its end", code="length"
        )
    if finish.reason != "stop":
        raise SummaryFailed(f"the model stopped the summary ({finish.reason})", code="invalid")
    return "".join(parts)


def _quote(text: str) -> str:
    # One line per message: a newline inside one would read as the next speaker's line.
    flat = " ".join(text.split())
    if len(flat) > MAX_QUOTED_CHARS:
        flat = flat[: MAX_QUOTED_CHARS - 1].rstrip() + "…"
    return flat


def _shot(conversation: str, summary: str) -> str:
    answer = json.dumps({"summary": summary}, ensure_ascii=False)
    return f"Conversation:\n{conversation}\nJSON: {answer}"
