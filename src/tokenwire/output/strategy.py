"""The request's ``extraction`` field, and how ``auto`` picks a strategy.

The strategies:

- ``inline``: one call; the model ends its answer with a ``<json>`` block
  (:mod:`tokenwire.output.inline`). Data arrives with the text; needs a model that follows
  format instructions.
- ``sequential``: after the text, a second call extracts JSON from the user message and the
  canonical answer. The data is consistent with the text by construction.
- ``parallel``: the second call starts with the first, from the user message only; data may
  arrive before the text ends, but cannot refer to the answer.

The ``auto`` rule reads two spec fields and one fact about the route, and nothing else:

1. ``depends_on_text`` false (the data comes from the user's input alone) → ``parallel``;
2. else ``latency == "low"`` and the model can write an inline block → ``inline``;
3. else → ``sequential``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["inline", "sequential", "parallel"]


class ExtractionSpec(BaseModel):
    """The request field ``extraction``. Strict: unknown fields and wrong types are rejected.

    The schema is given as ``"schema"`` in JSON (the Python attribute is ``json_schema``,
    because ``schema`` is a name pydantic's ``BaseModel`` already has).
    """

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, validate_by_name=True, validate_by_alias=True
    )

    json_schema: dict[str, Any] | str = Field(alias="schema")
    """An inline JSON Schema, or the name of a registered one."""
    strategy: Literal["inline", "sequential", "parallel", "auto"] = "auto"
    max_retries: int = Field(default=2, ge=0, le=5)
    """Re-asks with the validation errors after the first attempt fails (N in "up to N")."""
    depends_on_text: bool = True
    """True when the data must match the answer (extract from it); false when the user's input
    alone determines it (classify the question, pull fields out of the request)."""
    latency: Literal["low", "normal"] = "normal"
    """``low``: the data is wanted as soon as the text ends, at the cost of asking the answering
    model for a block."""


def choose_strategy(spec: ExtractionSpec, *, inline_capable: bool = True) -> Strategy:
    """The strategy to run: ``spec.strategy`` unless it is ``auto``, then the module's rule.

    ``inline_capable`` is false for models that do not follow format instructions (the local
    base model): ``auto`` then never picks ``inline``. An explicit ``inline`` is honoured anyway
    — the request asked for it, and its failures are reported like any other.
    """
    if spec.strategy != "auto":
        return spec.strategy
    if not spec.depends_on_text:
        return "parallel"
    if spec.latency == "low" and inline_capable:
        return "inline"
    return "sequential"
