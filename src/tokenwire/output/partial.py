"""The object so far, from JSON text that is still streaming.

Feed text as it arrives; :meth:`PartialJSON.feed` returns the parsed value when it differs from
the last one it returned, else :data:`UNCHANGED` — so one ``structured.partial`` event per
return value is an event per change, never a repeat.

What a caller may rely on about the values:

- Only objects and arrays are followed: everything before the first ``{``/``[`` (whitespace, a
  ```` ```json ```` fence, a stray sentence) is skipped, and so is everything after the value
  closes (a closing fence).
- Values only grow: keys appear once their value has begun, strings grow at their end, and a
  number or ``true``/``false``/``null`` appears only once it is complete (a trailing ``12``
  could still become ``123``, so it is held back until a delimiter follows).
- After the value closes, :attr:`PartialJSON.complete` is true and the last value returned is
  the whole parsed value. Validating it is someone else's job: a partial value is a preview.

Given the schema (``PartialJSON(schema)``), every value returned is also a valid prefix: it
carries only what can still become an object valid under the schema
(:func:`~tokenwire.output.prefix.valid_prefix`: enum prefixes, string and array bounds, types,
forbidden keys). A value that strays from the schema is cut where it strays, so a preview can
lose a part at that moment; for data that stays valid, previews only grow, and the last one is the
whole value.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Final, Literal

import jiter

from .prefix import HIDDEN, OpenTail, PrefixValidator
from .scan import BracketScanner
from .schema import ResolvedSchema


class _Unchanged(Enum):
    UNCHANGED = "UNCHANGED"

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged.UNCHANGED
"""Returned by :meth:`PartialJSON.feed` when the value is the same as the last one returned."""

# A number or literal still being written at the very end of the text (outside any string).
_TRAILING_SCALAR = re.compile(r"[-+.0-9eEtrufalsn]+\Z")


class PartialJSON:
    """Incremental parser of one JSON object or array, for previews while it streams.

    Each :meth:`feed` re-parses the value so far with jiter's partial mode (fast, in Rust): the
    cost is linear in the value's length per call, which suits structured outputs of a few KB.
    """

    def __init__(self, schema: ResolvedSchema | None = None) -> None:
        """``schema``: previews carry only what can still become valid under it (None: all)."""
        self._prefix = PrefixValidator(schema) if schema is not None else None
        self._text: list[str] = []
        self._start_found = False
        self._scanner = BracketScanner()
        self._last: Any = UNCHANGED

    @property
    def complete(self) -> bool:
        """True once the top-level value has closed (later text is ignored)."""
        return self._scanner.end is not None

    @property
    def value(self) -> Any | Literal[_Unchanged.UNCHANGED]:
        """The last value :meth:`feed` returned; :data:`UNCHANGED` before the first."""
        return self._last

    @property
    def text(self) -> str:
        """The JSON text from its first bracket up to what has arrived (or its end)."""
        joined = "".join(self._text)
        end = self._scanner.end
        return joined if end is None else joined[:end]

    def feed(self, chunk: str) -> Any | Literal[_Unchanged.UNCHANGED]:
        """Add text; return the value so far if it changed, else :data:`UNCHANGED`."""
        if self._scanner.done:
            return UNCHANGED
        if not self._start_found:
            starts = [i for i in (chunk.find("{"), chunk.find("[")) if i >= 0]
            if not starts:
                return UNCHANGED
            chunk = chunk[min(starts) :]
            self._start_found = True
        self._text.append(chunk)
        self._scanner.feed(chunk)
        if self._scanner.mismatch is not None:
            return UNCHANGED
        text = self.text
        if not self._scanner.in_string and self._scanner.end is None:
            text = _TRAILING_SCALAR.sub("", text)
        try:
            value = jiter.from_json(
                text.encode(), partial_mode="trailing-strings", allow_inf_nan=False
            )
        except ValueError:
            # Malformed so far: keep the last good preview; the final parse reports the error.
            return UNCHANGED
        if self._prefix is not None:
            value = self._prefix.prune(value, self._tail())
            if value is HIDDEN:
                return UNCHANGED
        # Plain == is enough although 1 == 1.0 == True: values only grow, so two successive
        # previews never differ by the type of an equal-comparing scalar alone.
        if value == self._last:
            return UNCHANGED
        self._last = value
        return value

    def _tail(self) -> OpenTail:
        scanner = self._scanner
        if scanner.end is not None:
            return OpenTail(0)
        return OpenTail(scanner.depth, string=scanner.in_string and not scanner.in_key)
