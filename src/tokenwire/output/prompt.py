"""Prompts for the extraction call of the ``sequential`` and ``parallel`` strategies.

Two forms of the same request: chat messages for instruction-following models, and a
completion-style prompt ending in ``JSON:`` for base models (the local Gemma 3 270M continues
such a prompt with the JSON, especially under a JSON-schema grammar). And the re-ask that
follows a failed attempt, carrying what was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .example import example_values
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


@dataclass(frozen=True, slots=True)
class PromptShape:
    """What the completion-style extraction prompt shows a base model besides the text.

    Measured on Gemma 3 270M against a labelled set (bench/extraction_accuracy.py, in
    docs/PERFORMANCE.md): :data:`DEFAULT_SHAPE` is the best of the shapes compared there.
    """

    examples: int = 0
    """How many example objects built from the schema to show (its enum values, field names;
    see :func:`~tokenwire.output.example.example_values`)."""
    quoted: bool = False
    """Quote the text as a JSON string (escaped), so where it ends is unambiguous."""
    descriptions: bool = False
    """List the fields with their allowed values and their schema ``description``."""
    named_values: bool = False
    """Name each enum field's allowed values in the instruction itself, next to the cue:
    ``Extract the fields sentiment (positive, negative or neutral), topic as JSON.``"""
    text_last: bool = False
    """Put the instruction first and the text last, right before the cue, so the words the
    model reads just before it writes the JSON are the text's own (recency)."""


PLAIN = PromptShape()
"""The prompt as it was before the comparison: the text, the field names, ``JSON:``."""

DEFAULT_SHAPE = PromptShape(text_last=True, quoted=True)
"""The instruction, then the text quoted, then ``JSON:``: on the labelled set the topic was right
far more often with the text just before the JSON than after the instruction, and a little more
often quoted (docs/PERFORMANCE.md); listing values or examples made the model pick the first
value shown."""


def extraction_prompt(
    user_message: str,
    answer_text: str | None,
    schema: dict[str, Any],
    shape: PromptShape = DEFAULT_SHAPE,
) -> str:
    """The same request as one completion-style prompt, for base models; it ends with ``JSON:``.

    The lines, each only with its ``shape`` flag: the fields and their allowed values, the
    example objects, then the text (quoted) and the instruction (in this order, or the
    instruction first with ``text_last``), and the cue.
    """
    source = user_message if answer_text is None else f"{user_message}\n{answer_text}"
    properties = schema.get("properties", {})
    names = list(properties) if isinstance(properties, dict) else []
    if shape.named_values:
        names = [_with_values(name, properties[name]) for name in names]
    fields = ", ".join(names)
    what = f"the fields {fields}" if fields else "the data"
    lines: list[str] = []
    if shape.descriptions:
        lines += _field_lines(schema)
    if shape.examples:
        lines += [f"Example JSON: {_json(v)}" for v in example_values(schema, shape.examples)]
    text = json.dumps(source, ensure_ascii=False) if shape.quoted else source
    ask = [f"Text: {text}", f"Extract {what} as JSON."]
    lines += ask[::-1] if shape.text_last else ask
    return "\n".join(lines) + "\nJSON: "


def _field_lines(schema: dict[str, Any]) -> list[str]:
    """One line per property: its name, its allowed values or type, its description."""
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return []
    lines = ["Fields:"]
    for name, sub in properties.items():
        sub = sub if isinstance(sub, dict) else {}
        if isinstance(sub.get("enum"), list):
            kind = "one of " + ", ".join(_json(v) for v in sub["enum"])
        elif isinstance(sub.get("type"), str):
            kind = "a " + sub["type"] if sub["type"] != "array" else "a list"
        else:
            kind = "any value"
        about = " ".join(str(sub.get("description", "")).split()).rstrip(".")
        about = about[:1].upper() + about[1:]
        lines.append(f"- {name}: {kind}" + (f". {about}." if about else "."))
    return lines


def _with_values(name: str, schema: Any) -> str:
    values = schema.get("enum") if isinstance(schema, dict) else None
    if not isinstance(values, list) or not values:
        return name
    words = [v if isinstance(v, str) else _json(v) for v in values]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    return f"{name} ({listed})"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


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
