"""The ``inline`` strategy's splitter: the answer for people, the JSON block for systems.

The model writes its answer, then ``<json>`` + one JSON value + ``</json>`` (the markers are
configurable). :class:`InlineSplitter` takes the stream in chunks split anywhere and routes each
character to one side. What a caller may rely on:

- The concatenated ``visible`` parts are exactly the text before the start marker: no character
  of a marker or of the block ever appears there, however the chunks split. To guarantee it, a
  visible suffix that could be the beginning of the start marker is held back until the next
  chunk shows it is not (at most ``len(start) - 1`` characters, so the human channel lags by a
  few characters only around a ``<``).
- The concatenated ``json_text`` parts are exactly the text between the markers (without the
  end marker, which is held back the same way).
- Text after the end marker is dropped from both sides and kept in :attr:`InlineSplitter.trailing`
  for diagnostics: the instructions ask the model to end with the block, so anything after it is
  off-script (often a second block or a sign-off), and showing it would reopen the question of
  what is answer and what is data.
- Without an end marker (a truncated stream) the JSON text is whatever arrived; the parser then
  reports it as incomplete.

Why tags and not a markdown fence: answers legitimately contain code fences, ```` ```json ````
ones included (a model asked about JSON shows examples). Treating a fence as the block would
hide part of a real answer, and detecting only "the last fence" needs the end of the stream,
which would hold back the whole answer. A pair of tags is rare in prose and models write it
reliably. A deployment that prefers fences can pass ``start="```json\\n"``, ``end="\\n```"``:
the no-leak guarantee holds for any markers. Markers match exactly (case-sensitive).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DEFAULT_START = "<json>"
DEFAULT_END = "</json>"


@dataclass(frozen=True, slots=True)
class InlineOutput:
    """What one :meth:`InlineSplitter.feed` released: text for people, text for extraction."""

    visible: str = ""
    json_text: str = ""


class InlineSplitter:
    """Splits a streamed answer into its visible part and its JSON block. Sans-I/O.

    Call :meth:`feed` per chunk and :meth:`finish` once at the end of the stream.
    """

    def __init__(self, *, start: str = DEFAULT_START, end: str = DEFAULT_END) -> None:
        if not start or not end:
            raise ValueError("the inline markers must not be empty")
        self.start = start
        self.end = end
        self._pending = ""
        self._in_block = False
        self._block_ended = False
        self._finished = False
        self.trailing = ""
        """Text after the end marker, dropped from both channels."""

    @property
    def block_started(self) -> bool:
        """True once the start marker has arrived: nothing more will be visible."""
        return self._in_block or self._block_ended

    @property
    def block_ended(self) -> bool:
        """True once the end marker has arrived: the JSON text is whole."""
        return self._block_ended

    def feed(self, chunk: str) -> InlineOutput:
        """Route ``chunk``; returns what can be released now (either part may be empty)."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if self._block_ended:
            self.trailing += chunk
            return InlineOutput()
        self._pending += chunk
        visible = ""
        if not self._in_block:
            index = self._pending.find(self.start)
            if index < 0:
                keep = _marker_prefix_len(self._pending, self.start)
                visible = self._pending[: len(self._pending) - keep]
                self._pending = self._pending[len(visible) :]
                return InlineOutput(visible=visible)
            visible = self._pending[:index]
            self._pending = self._pending[index + len(self.start) :]
            self._in_block = True
        index = self._pending.find(self.end)
        if index >= 0:
            json_text = self._pending[:index]
            self.trailing = self._pending[index + len(self.end) :]
            self._pending = ""
            self._in_block = False
            self._block_ended = True
            return InlineOutput(visible=visible, json_text=json_text)
        keep = _marker_prefix_len(self._pending, self.end)
        json_text = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(json_text) :]
        return InlineOutput(visible=visible, json_text=json_text)

    def finish(self) -> InlineOutput:
        """End of stream: release what was held back, to the side it belongs to."""
        if self._finished:
            return InlineOutput()
        self._finished = True
        pending, self._pending = self._pending, ""
        if self._in_block:
            return InlineOutput(json_text=pending)
        return InlineOutput(visible=pending)


def _marker_prefix_len(text: str, marker: str) -> int:
    """The length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def inline_instructions(
    schema: dict[str, Any], *, start: str = DEFAULT_START, end: str = DEFAULT_END
) -> str:
    """The text to append to the system prompt so the model writes the block the splitter reads.

    It names the markers exactly as :class:`InlineSplitter` expects them and embeds the schema
    as compact JSON.
    """
    schema_text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    return (
        "First answer the user normally. Then, at the very end of your reply, write "
        f"{start} followed by a single JSON value that matches this JSON Schema, "
        f"followed by {end}, and write nothing after {end}. Do not mention the block in your "
        "answer and do not wrap it in a code fence.\n"
        f"JSON Schema: {schema_text}\n"
        f'Example ending: ...your answer.\n{start}{{"...": "..."}}{end}'
    )
