"""Validate extracted data against a :class:`~tokenwire.output.schema.ResolvedSchema`.

Errors come back as short, readable :class:`SchemaIssue` values (a JSONPath-like location and
jsonschema's message), in a stable order and bounded in number and length: they go into logs,
``structured.error`` messages and the re-ask prompt, where a 40 KB instance dump helps nobody.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsonschema import ValidationError

from .schema import ResolvedSchema

MAX_ISSUES = 10
MAX_MESSAGE_CHARS = 200


@dataclass(frozen=True, slots=True)
class SchemaIssue:
    """One way the data breaks the schema."""

    path: str
    """Where, as JSONPath: ``$`` is the whole value, ``$.items[0].name`` a nested field."""
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def validate(
    data: Any, schema: ResolvedSchema, *, max_issues: int = MAX_ISSUES
) -> list[SchemaIssue]:
    """The issues of ``data`` against ``schema``: empty means valid.

    At most ``max_issues`` are returned, ordered by location, then message; each message is
    cut to ``MAX_MESSAGE_CHARS``.
    """
    errors = sorted(schema.validator.iter_errors(data), key=_order)
    return [
        SchemaIssue(path=error.json_path, message=_shorten(error.message))
        for error in errors[:max_issues]
    ]


def _order(error: ValidationError) -> tuple[tuple[tuple[int, int, str], ...], str]:
    # Indices sort as numbers ($[2] before $[10]), and before keys at the same depth.
    path = tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.absolute_path)
    return path, error.message


def _shorten(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"
