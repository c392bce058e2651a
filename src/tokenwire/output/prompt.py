"""Prompts for the extraction call of the ``sequential`` and ``parallel`` strategies.

Two forms of the same request: chat messages for instruction-following models, and a
completion-style prompt ending in ``JSON:`` for base models (the local Gemma 3 270M continues
such a prompt with the JSON, especially under a JSON-schema grammar). And the re-ask that
follows a failed attempt, carrying what was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from .validate import SchemaIssue

Role = Literal["system", "user", "assistant"]

_SYSTEM = (
    "You extract structured data. Reply with a single JSON value that matches the JSON Schema "
    "you are given, and nothing else: no prose, no code fence."
)


def _schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def extraction_messages(
    user_message: str, answer_text: str | None, schema: dict[str, Any]
) -> list[tuple[Role, str]]:
    """Chat messages asking for JSON only, extracted from the exchange.

    ``answer_text`` is the canonical answer (``sequential``) or None (``parallel``: the
    extraction starts before there is an answer, so it reads the user's message alone).
    """
    parts = [f"JSON Schema: {_schema_text(schema)}", "", f"User message:\n{user_message}"]
    if answer_text is not None:
        parts += ["", f"Answer:\n{answer_text}", "", "Extract the data from the answer above."]
    else:
        parts += ["", "Extract the data from the user message above."]
    return [("system", _SYSTEM), ("user", "\n".join(parts))]


def extraction_prompt(user_message: str, answer_text: str | None, schema: dict[str, Any]) -> str:
    """The same request as one completion-style prompt, for base models; it ends with ``JSON:``."""
    source = user_message if answer_text is None else f"{user_message}\n{answer_text}"
    fields = ", ".join(schema.get("properties", {}))
    what = f"the fields {fields}" if fields else "the data"
    return f"Text: {source}\nExtract {what} as JSON.\nJSON: "


def reask_messages(
    previous_output: str, problem: str | Sequence[SchemaIssue]
) -> list[tuple[Role, str]]:
    """Messages to append to the extraction conversation after a failed attempt.

    ``problem`` is the parse failure's message, or the schema issues of a value that parsed.
    """
    if isinstance(problem, str):
        detail = f"It is not valid JSON: {problem}"
    else:
        detail = "It does not match the schema:\n" + "\n".join(f"- {i}" for i in problem)
    return [
        ("assistant", previous_output),
        ("user", f"{detail}\nReply again with only the corrected JSON value."),
    ]
