"""Fitting a conversation into a context window, sans-I/O: messages and a counter in, the
messages to send and a report of what was left out.

The prompt is, in this order: every system message (the route's, then the request's), the
summary of older turns if one is used (as one more system message), the history turns kept
(whole turns, oldest first), then the new messages. When it does not fit
``window - reserve_output`` tokens:

- the oldest whole turns are dropped: a user message never loses its answer, or the reverse;
- a summary is sent in their place when none of the turns it covers is kept (turns older than
  the history given count as left out) and it fits; it may push out more of the oldest kept
  turns to make room (it stands for many turns, each of them for one);
- system messages and new messages are never dropped: if those alone do not fit, that is
  :class:`ContextTooLong`, which is the request's fault (HTTP 400 ``context_too_long``).

Cost: one count when everything fits. Otherwise each turn is counted alone, newest first and
only until the budget is spent, and the prompt chosen from those sums is counted once more for
real; turns are dropped one by one, with a recount each, only if rendering it whole cost more
than its parts (tokenizers merge across message boundaries; for tiktoken and the estimate the
sums are exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..providers.base import Message
from .tokens import TokenCounter

SUMMARY_PREFIX = "Summary of the earlier conversation: "


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    """One earlier turn of the conversation: its user message(s), then the answer."""

    stream_id: str
    messages: tuple[Message, ...]

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError(f"turn {self.stream_id!r} has no messages")
        if any(m.role == "system" for m in self.messages):
            # A turn is dropped whole; a system message in it would be dropped with it.
            raise ValueError(f"turn {self.stream_id!r}: system messages go in `system`")


@dataclass(frozen=True, slots=True)
class ContextSummary:
    """A summary of earlier turns, which may stand in for them once they no longer fit."""

    text: str
    covers: tuple[str, ...]
    """The stream ids of the turns it summarises."""

    def as_message(self) -> Message:
        return Message("system", SUMMARY_PREFIX + self.text)


@dataclass(frozen=True, slots=True)
class ContextFit:
    """What to send, and what was left out to make it fit."""

    messages: tuple[Message, ...]
    """System messages, the summary (if used), the kept history, then the new messages."""
    counter: str
    window: int
    reserve_output: int
    prompt_tokens: int
    """``messages`` counted by the provider's counter, as a whole."""
    history_turns: int
    kept: tuple[str, ...]
    """Stream ids of the history turns sent verbatim, oldest first."""
    dropped: tuple[str, ...]
    """Stream ids of the history turns not sent verbatim (summarised or not), oldest first."""
    summarized: tuple[str, ...]
    """The stream ids the summary sent stands for; empty if no summary was sent."""

    @property
    def budget(self) -> int:
        return self.window - self.reserve_output

    @property
    def trimmed(self) -> bool:
        return bool(self.dropped)

    @property
    def report(self) -> dict[str, Any]:
        """For ``done.context``: JSON-ready, a new dict each time."""
        return {
            "counter": self.counter,
            "window": self.window,
            "reserve_output": self.reserve_output,
            "budget": self.budget,
            "prompt_tokens": self.prompt_tokens,
            "history_turns": self.history_turns,
            "kept_turns": len(self.kept),
            "dropped": list(self.dropped),
            "summarized": list(self.summarized),
        }


class ContextTooLong(Exception):
    """The system and new messages alone need more than the budget: nothing can be dropped to
    make them fit. The request's fault: the engine answers 400 ``context_too_long``."""

    code = "context_too_long"

    def __init__(self, *, required: int, budget: int, window: int, counter: str) -> None:
        super().__init__(
            f"the new messages need {required} prompt tokens ({counter}), but the context window "
            f"of {window} leaves {budget} once the answer's room is reserved"
        )
        self.required = required
        self.budget = budget
        self.window = window
        self.counter = counter


def fit_context(
    system: Sequence[Message],
    history: Sequence[HistoryTurn],
    new: Sequence[Message],
    *,
    counter: TokenCounter,
    window: int,
    reserve_output: int,
    summary: ContextSummary | None = None,
) -> ContextFit:
    """The newest turns of ``history`` (oldest first) that fit with ``system`` and ``new`` in
    ``window - reserve_output`` tokens counted by ``counter``; see the module docstring.

    System messages among ``new`` move up to the others. Raises :class:`ContextTooLong`, and
    ``ValueError`` for a non-system message in ``system`` or a window that leaves no budget.
    """
    if any(m.role != "system" for m in system):
        raise ValueError("`system` holds system messages only")
    if reserve_output < 0:
        raise ValueError("reserve_output cannot be negative")
    budget = window - reserve_output
    if budget < 1:
        raise ValueError(f"reserve_output {reserve_output} leaves no room in a window of {window}")
    head = (*system, *(m for m in new if m.role == "system"))
    tail = tuple(m for m in new if m.role != "system")

    def assemble(start: int, with_summary: bool) -> tuple[Message, ...]:
        middle = [m for turn in history[start:] for m in turn.messages]
        if with_summary:
            assert summary is not None
            middle.insert(0, summary.as_message())
        return (*head, *middle, *tail)

    def result(start: int, with_summary: bool, tokens: int) -> ContextFit:
        return ContextFit(
            messages=assemble(start, with_summary),
            counter=counter.name,
            window=window,
            reserve_output=reserve_output,
            prompt_tokens=tokens,
            history_turns=len(history),
            kept=tuple(t.stream_id for t in history[start:]),
            dropped=tuple(t.stream_id for t in history[:start]),
            summarized=summary.covers if with_summary and summary is not None else (),
        )

    def summary_applies(start: int) -> bool:
        # Only in place of turns that are all left out: never next to one it summarises.
        # Turns it covers that are not in ``history`` at all (older than what was loaded) are
        # left out too.
        if summary is None:
            return False
        return not {t.stream_id for t in history[start:]}.intersection(summary.covers)

    # The common case, a conversation that fits: one count (two with a summary of turns older
    # than the history given).
    tokens = counter.count(assemble(0, False))
    if tokens <= budget:
        if not summary_applies(0):
            return result(0, False, tokens)
        with_summary_tokens = counter.count(assemble(0, True))
        if with_summary_tokens <= budget:
            return result(0, True, with_summary_tokens)

    required = counter.count((*head, *tail))
    if required > budget:
        raise ContextTooLong(required=required, budget=budget, window=window, counter=counter.name)
    framing = counter.count(())

    def cost(messages: Sequence[Message]) -> int:
        # What these messages add to a prompt: their count alone, less the framing every prompt
        # pays once (for llama.cpp: BOS, preamble, few-shot turns, the final "Assistant:").
        return max(counter.count(messages) - framing, 0)

    room = budget - required
    costs: list[int] = []  # per kept turn, newest first
    used = 0
    start = len(history)
    while start > 0:
        turn_cost = cost(history[start - 1].messages)
        if used + turn_cost > room:
            break
        costs.append(turn_cost)
        used += turn_cost
        start -= 1

    with_summary = False
    if summary is not None and summary_applies(start):
        summary_cost = cost((summary.as_message(),))
        if summary_cost <= room:
            with_summary = True
            while used + summary_cost > room:
                used -= costs.pop()
                start += 1

    # The real count of the prompt chosen; more goes only if the whole costs more than its parts.
    while True:
        tokens = counter.count(assemble(start, with_summary))
        if tokens <= budget:
            return result(start, with_summary, tokens)
        if start < len(history):
            start += 1
        elif with_summary:
            with_summary = False
        else:
            raise ContextTooLong(
                required=tokens, budget=budget, window=window, counter=counter.name
            )
