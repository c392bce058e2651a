"""Parse a model's JSON, repairing it only where the repair is unambiguous.

The outcome is one of three, and a caller may rely on what each means:

- ``ok``: ``data`` is the value. ``repaired`` says whether the text needed repairs, ``repairs``
  names them, in order.
- ``json_incomplete``: the text stops before its JSON value ends (a truncated stream, max_tokens).
  Never "completed" into a plausible-looking value: the missing part is unknown.
- ``json_invalid``: malformed, and no unambiguous repair makes it parse.

The repairs, all of which only *remove* characters that cannot be part of the value:

1. a markdown code fence around the JSON (```` ```json ... ``` ````);
2. prose before the first ``{``/``[`` and after its matching closer, provided the value is
   complete and the prose after it holds no other ``{``/``[`` (two candidate values would be
   a guess);
3. commas directly before ``}`` or ``]`` (outside strings).

Smart quotes, single quotes, comments and unquoted keys are not repaired: each has readings
that change the data. NaN and Infinity are rejected, as JSON does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import jiter

from .scan import BracketScanner

_OPENING_FENCE = re.compile(r"\A\s*```[\w+-]*[ \t]*\r?\n?")
_CLOSING_FENCE = re.compile(r"\r?\n?[ \t]*```\s*\Z")


@dataclass(frozen=True, slots=True)
class ParseOutcome:
    """The result of :func:`parse_and_repair`; check :attr:`ok` first."""

    status: Literal["ok", "json_incomplete", "json_invalid"]
    data: Any = None
    """The value when ``status`` is ``ok``; None otherwise (JSON ``null`` is also None)."""
    repaired: bool = False
    repairs: list[str] = field(default_factory=list)
    message: str = ""
    """Why it failed, for a log line or a re-ask; empty when ``ok``."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def loads(text: str) -> Any:
    """Strict JSON (no NaN/Infinity, nothing after the value). Raises ``ValueError``."""
    return jiter.from_json(text.encode(), allow_inf_nan=False, cache_mode="keys")


def _is_valid_prefix(text: str) -> bool:
    # jiter's partial mode accepts exactly the texts that some continuation would make valid
    # (it rejects `{"a": trux` and `{"a" 1`), which is what "truncated" means.
    try:
        jiter.from_json(text.encode(), partial_mode="trailing-strings", allow_inf_nan=False)
    except ValueError:
        return False
    return True


def parse_and_repair(text: str) -> ParseOutcome:
    """Parse ``text`` as one JSON value, with the unambiguous repairs listed in the module doc."""
    try:
        return ParseOutcome("ok", data=loads(text))
    except ValueError as exc:
        first_error = str(exc)
    if not text.strip():
        return ParseOutcome("json_invalid", message="no JSON value: the text is empty")

    repairs: list[str] = []
    body = text
    fence = _OPENING_FENCE.match(body)
    if fence:
        body = body[fence.end() :]
        closing = _CLOSING_FENCE.search(body)
        if closing:
            body = body[: closing.start()]
        repairs.append("removed a markdown code fence")

    start = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
    if start < 0:
        return ParseOutcome("json_invalid", message=f"no JSON object or array: {first_error}")
    scanner = BracketScanner()
    scanner.feed(body[start:])
    if scanner.mismatch is not None:
        return ParseOutcome(
            "json_invalid", message=f"mismatched bracket at offset {start + scanner.mismatch}"
        )
    if scanner.end is None:
        # The value never closed: truncated if everything so far is valid JSON, else malformed.
        candidate = _drop(body[start:], scanner.trailing_commas)
        if _is_valid_prefix(candidate):
            return ParseOutcome("json_incomplete", message="the JSON value ends before it closes")
        return ParseOutcome("json_invalid", message=first_error)

    end = start + scanner.end
    before, after = body[:start], body[end:]
    if before.strip():
        repairs.append("removed text before the JSON")
    if after.strip():
        if "{" in after or "[" in after:
            return ParseOutcome(
                "json_invalid", message="more than one JSON value in the text: which is meant?"
            )
        repairs.append("removed text after the JSON")
    value = body[start:end]
    if scanner.trailing_commas:
        value = _drop(value, scanner.trailing_commas)
        repairs.append(f"removed {len(scanner.trailing_commas)} trailing comma(s)")
    try:
        data = loads(value)
    except ValueError as exc:
        return ParseOutcome("json_invalid", message=str(exc))
    return ParseOutcome("ok", data=data, repaired=True, repairs=repairs)


def _drop(text: str, offsets: list[int]) -> str:
    if not offsets:
        return text
    skip = set(offsets)
    return "".join(ch for i, ch in enumerate(text) if i not in skip)
