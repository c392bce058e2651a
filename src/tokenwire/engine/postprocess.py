"""Post-processing: the canonical answer is the streamed text after cleanup.

Applications persist and route the canonical answer (``done.answer``), never the concatenated
deltas: what streamed may carry artifacts a reader tolerates but a database should not keep.

Cleanup, outside code (fenced blocks and inline code spans are left exactly as streamed):

- citation markers: ``[3]``, ``[1, 2]`` and ``[1][2]`` when the turn put that many numbered
  passages in the prompt (``citations``); footnote markers ``[^1]``; vendor markers such as
  ``【4:0†source】``. A marker never becomes a source here: :func:`cited_numbers` reports
  which passages the text cited, so the caller can order the sources;
- provider artifacts: end-of-turn tokens a model or a template leaked (``<end_of_turn>``,
  ``<eos>``, ``</s>``, ``<|im_end|>``, ``<|endoftext|>``, ``<|eot_id|>``);
- whitespace: line endings normalised, runs of spaces inside a line collapsed (indentation
  kept), trailing spaces dropped, runs of blank lines folded to one, the ends trimmed.
"""

from __future__ import annotations

import re

_ARTIFACTS = re.compile(
    r"<end_of_turn>|<start_of_turn>(?:model|user)?|<eos>|<bos>|</s>"
    r"|<\|(?:im_end|im_start|endoftext|eot_id|end_of_text|end)\|>"
)
_VENDOR_MARKERS = re.compile(r"【[^】\n]{0,80}】")
_FOOTNOTES = re.compile(r"[ \t]*\[\^\d{1,3}\]")
_NUMBERED = re.compile(r"[ \t]*\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\](?!\()")
_CODE = re.compile(r"(```.*?(?:```|\Z)|`[^`\n]+`)", re.DOTALL)
_INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


def canonical_answer(streamed: str, *, citations: int = 0) -> str:
    """The answer to keep: ``streamed`` cleaned up (see the module docstring). ``citations``:
    how many numbered passages the prompt held (``[n]`` markers up to it are removed)."""
    text = streamed.replace("\r\n", "\n").replace("\r", "\n")
    parts = _CODE.split(text)
    # split() with one group: even indexes are prose, odd ones the code between them.
    for index in range(0, len(parts), 2):
        parts[index] = _clean_prose(parts[index], citations)
    text = "".join(parts)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


def cited_numbers(streamed: str, *, citations: int) -> list[int]:
    """The passage numbers (1..``citations``) the text cites, in order of first citation."""
    seen: dict[int, None] = {}
    if citations <= 0:
        return []
    parts = _CODE.split(streamed)
    for index in range(0, len(parts), 2):
        for match in _NUMBERED.finditer(parts[index]):
            numbers = _numbers(match.group(1))
            if all(1 <= n <= citations for n in numbers):
                seen.update(dict.fromkeys(numbers))
    return list(seen)


def _clean_prose(text: str, citations: int) -> str:
    text = _ARTIFACTS.sub("", text)
    text = _VENDOR_MARKERS.sub("", text)
    text = _FOOTNOTES.sub("", text)
    if citations > 0:

        def drop(match: re.Match[str]) -> str:
            numbers = _numbers(match.group(1))
            in_range = all(1 <= n <= citations for n in numbers)
            return "" if in_range else match.group(0)

        text = _NUMBERED.sub(drop, text)
    return _INNER_SPACES.sub(" ", text)


def _numbers(group: str) -> list[int]:
    return [int(n) for n in group.split(",")]
