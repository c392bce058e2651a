"""A string-aware bracket scanner for JSON text, fed incrementally.

It does not parse values: it follows strings (with their escapes), brackets and commas, which is
what repair and partial parsing need to know and a real parser does not tell — where the
top-level value ends, whether the text stops inside a string, and which commas dangle before a
closing bracket. Parsing itself is jiter's job.
"""

from __future__ import annotations

_CLOSER_OF = {"{": "}", "[": "]"}
_WHITESPACE = frozenset(" \t\r\n")
# A comma is "trailing" only after something that can end a value; `[,]` stays malformed.
_ENDS_VALUE = frozenset('"}]') | frozenset("0123456789") | frozenset("truefalsn")


class BracketScanner:
    """Follows one JSON value that starts with ``{`` or ``[``; feed it text in any pieces.

    After each :meth:`feed` a caller may rely on: :attr:`in_string` (the text so far ends inside
    a string), :attr:`in_key` (that string is an object's key, not a value), :attr:`depth` (open
    brackets), :attr:`end` (offset just past the closing bracket
    of the top-level value, once it has closed; later text is not scanned), :attr:`mismatch`
    (offset of a closer that does not match its opener; scanning stops there) and
    :attr:`trailing_commas` (offsets of commas followed only by whitespace and a closer).
    Offsets count characters from the first character fed.
    """

    def __init__(self) -> None:
        self._stack: list[str] = []
        self._pos = 0
        self._escape = False
        self._last_comma: int | None = None
        self._last_significant = ""
        self.in_string = False
        self.in_key = False
        self.end: int | None = None
        self.mismatch: int | None = None
        self.trailing_commas: list[int] = []

    @property
    def depth(self) -> int:
        return len(self._stack)

    @property
    def done(self) -> bool:
        """True once the top-level value closed or a mismatch stopped the scan."""
        return self.end is not None or self.mismatch is not None

    def feed(self, text: str) -> None:
        """Scan more text. The first non-whitespace character should be ``{`` or ``[``."""
        for ch in text:
            if self.done:
                return
            pos = self._pos
            self._pos += 1
            if self.in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self.in_string = False
                    self._last_significant = '"'
                continue
            if ch in _WHITESPACE:
                continue
            if ch == '"':
                self.in_string = True
                # In an object, a string after "{" or "," is a key; after ":" it is a value.
                in_object = bool(self._stack) and self._stack[-1] == "}"
                self.in_key = in_object and self._last_significant in ("{", ",")
                self._last_comma = None
            elif ch in _CLOSER_OF:
                self._stack.append(_CLOSER_OF[ch])
                self._last_comma = None
            elif ch in "}]":
                if not self._stack or self._stack[-1] != ch:
                    self.mismatch = pos
                    return
                self._stack.pop()
                if self._last_comma is not None:
                    self.trailing_commas.append(self._last_comma)
                    self._last_comma = None
                if not self._stack:
                    self.end = pos + 1
            elif ch == ",":
                self._last_comma = pos if self._last_significant in _ENDS_VALUE else None
            else:
                self._last_comma = None
            self._last_significant = ch
