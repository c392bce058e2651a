"""Retrieved passages in a turn: chosen, numbered, put in the prompt, reported as sources.

A route with ``retrieval`` looks the last user message up before it generates. The passages
that fit ``max_chars`` go into one system message, numbered ``[1]``, ``[2]``, ... so the model
can cite them; post-processing removes those markers from the answer (see
:mod:`tokenwire.engine.postprocess`). Every passage in the prompt is a source of the answer;
the ones the answer cites come first, in the order it first cites them, marked ``cited``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..providers import Message, SourceChunk
from ..retrieval import Passage

INSTRUCTIONS = (
    "Answer using the numbered passages below when they are relevant, and cite them like [1]."
)
SNIPPET_CHARS = 280


def select(
    passages: Sequence[Passage], *, max_chars: int, min_score: float | None
) -> list[Passage]:
    """The passages the prompt holds: best first, above ``min_score``, within ``max_chars``
    (the first passage is always kept, cut to the budget if it alone is too long)."""
    chosen: list[Passage] = []
    used = 0
    for passage in passages:
        if min_score is not None and passage.score < min_score:
            continue
        size = len(passage.text)
        if chosen and used + size > max_chars:
            break
        chosen.append(passage)
        used += size
    return chosen


def context_message(passages: Sequence[Passage], *, max_chars: int) -> Message:
    """One system message holding the numbered passages."""
    lines = [INSTRUCTIONS]
    for number, passage in enumerate(passages, 1):
        text = " ".join(passage.text.split())[:max_chars]
        lines.append(f"[{number}] {passage.title}: {text}")
    return Message("system", "\n".join(lines))


def passage_source(passage: Passage, *, cited: bool = False) -> SourceChunk:
    return SourceChunk(
        url=passage.url,
        id=passage.id,
        title=passage.title,
        snippet=_snippet(passage.text),
        origin="retrieval",
        cited=cited,
    )


def ordered_sources(passages: Sequence[Passage], cited: Sequence[int]) -> list[SourceChunk]:
    """Every passage as a source: the cited ones (1-based numbers) first, in citation order,
    marked ``cited``."""
    first = [n - 1 for n in cited if 1 <= n <= len(passages)]
    rest = [i for i in range(len(passages)) if i not in first]
    return [passage_source(passages[i], cited=True) for i in first] + [
        passage_source(passages[i]) for i in rest
    ]


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= SNIPPET_CHARS:
        return flat
    return flat[: SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"
