"""Declarative route conditions: small pydantic models, written in TOML as inline tables.

Which kind a table is follows from its keys (unknown keys are rejected)::

    when = { field = "metadata.tenant", exists = true }          # present and not null
    when = { field = "structured.data.sentiment", equals = "negative" }
    when = { field = "reason", any_of = ["timeout_total", "upstream_error"] }
    when = { field = "answer", min_chars = 1, max_chars = 2000 }  # a string of that length
    when = { field = "text", keywords = ["refund", "money back"] }  # any, as whole words
    when = { all = [ {...}, {...} ] }                             # every one matches
    when = { any = [ {...}, {...} ] }                             # at least one matches
    when = { not = {...} }
    when = { always = true }                                      # same as no `when`

Fields are dotted paths into the turn record (see :mod:`tokenwire.router.record`). A field that
is missing never matches ``equals``, ``any_of`` or a length, so a condition is safe on turns
that ended without structured data. Equality is JSON equality: ``true`` does not equal ``1``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    model_validator,
)

from .record import MISSING, resolve


class BaseCondition(BaseModel, ABC):
    """The base of every declarative condition: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @abstractmethod
    def matches(self, record: Mapping[str, Any]) -> bool:
        """True when the record satisfies this condition. Never raises for any record shape."""


class Always(BaseCondition):
    always: Literal[True] = True

    def matches(self, record: Mapping[str, Any]) -> bool:
        return True


class FieldExists(BaseCondition):
    field: str = Field(min_length=1)
    exists: bool = Field(description="true: present and not null; false: missing or null")

    def matches(self, record: Mapping[str, Any]) -> bool:
        value = resolve(record, self.field)
        return (value is not MISSING and value is not None) == self.exists


class FieldEquals(BaseCondition):
    field: str = Field(min_length=1)
    equals: Any

    def matches(self, record: Mapping[str, Any]) -> bool:
        return _json_equal(resolve(record, self.field), self.equals)


class FieldAnyOf(BaseCondition):
    field: str = Field(min_length=1)
    any_of: list[Any] = Field(min_length=1)

    def matches(self, record: Mapping[str, Any]) -> bool:
        value = resolve(record, self.field)
        return any(_json_equal(value, option) for option in self.any_of)


class TextLength(BaseCondition):
    field: str = Field(min_length=1)
    min_chars: int | None = Field(default=None, ge=0)
    max_chars: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _check_bounds(self) -> TextLength:
        if self.min_chars is None and self.max_chars is None:
            raise ValueError("a length condition needs min_chars, max_chars or both")
        if (
            self.min_chars is not None
            and self.max_chars is not None
            and self.min_chars > self.max_chars
        ):
            raise ValueError("min_chars is greater than max_chars")
        return self

    def matches(self, record: Mapping[str, Any]) -> bool:
        value = resolve(record, self.field)
        if not isinstance(value, str):
            return False
        if self.min_chars is not None and len(value) < self.min_chars:
            return False
        return self.max_chars is None or len(value) <= self.max_chars


class Keywords(BaseCondition):
    """The field is a string containing at least one keyword (or phrase) as whole words,
    ignoring case: ``refund`` matches "Refund please" and "refund?", not "refunded"."""

    field: str = Field(min_length=1)
    keywords: list[str] = Field(min_length=1)

    _pattern: re.Pattern[str] = PrivateAttr()

    @model_validator(mode="after")
    def _compile(self) -> Keywords:
        words = [r"\s+".join(map(re.escape, k.split())) for k in self.keywords]
        if not all(words):
            raise ValueError("a keyword is empty")
        self._pattern = re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)", re.IGNORECASE)
        return self

    def matches(self, record: Mapping[str, Any]) -> bool:
        value = resolve(record, self.field)
        return isinstance(value, str) and self._pattern.search(value) is not None


class AllOf(BaseCondition):
    all: list[Condition] = Field(min_length=1)

    def matches(self, record: Mapping[str, Any]) -> bool:
        return all(c.matches(record) for c in self.all)


class AnyCondition(BaseCondition):
    any: list[Condition] = Field(min_length=1)

    def matches(self, record: Mapping[str, Any]) -> bool:
        return any(c.matches(record) for c in self.any)


class Not(BaseCondition):
    not_: Condition = Field(alias="not")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def matches(self, record: Mapping[str, Any]) -> bool:
        return not self.not_.matches(record)


# The key that makes a table one kind of condition; checked in this order.
_TAG_KEYS = (
    ("all", "all"),
    ("any", "any"),
    ("not", "not"),
    ("always", "always"),
    ("exists", "exists"),
    ("equals", "equals"),
    ("any_of", "any_of"),
    ("keywords", "keywords"),
    ("min_chars", "length"),
    ("max_chars", "length"),
)
_TAG_BY_CLASS: dict[type[BaseCondition], str] = {
    AllOf: "all",
    AnyCondition: "any",
    Not: "not",
    Always: "always",
    FieldExists: "exists",
    FieldEquals: "equals",
    FieldAnyOf: "any_of",
    TextLength: "length",
    Keywords: "keywords",
}


def _condition_tag(value: Any) -> str | None:
    if isinstance(value, BaseCondition):
        return _TAG_BY_CLASS.get(type(value))
    if isinstance(value, Mapping):
        for key, tag in _TAG_KEYS:
            if key in value:
                return tag
    return None


Condition = Annotated[
    Annotated[AllOf, Tag("all")]
    | Annotated[AnyCondition, Tag("any")]
    | Annotated[Not, Tag("not")]
    | Annotated[Always, Tag("always")]
    | Annotated[FieldExists, Tag("exists")]
    | Annotated[FieldEquals, Tag("equals")]
    | Annotated[FieldAnyOf, Tag("any_of")]
    | Annotated[TextLength, Tag("length")]
    | Annotated[Keywords, Tag("keywords")],
    Discriminator(
        _condition_tag,
        custom_error_type="invalid_condition",
        custom_error_message=(
            "a condition needs one of: exists, equals, any_of, keywords, "
            "min_chars/max_chars (with field), all, any, not, always"
        ),
    ),
]
"""Any declarative condition; validate a dict with ``pydantic.TypeAdapter(Condition)``."""


def _json_equal(a: Any, b: Any) -> bool:
    # Python says True == 1 and 1 == 1.0; JSON consumers mostly agree on the number but not on
    # the boolean, so a boolean only equals a boolean.
    if a is MISSING:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return False


for _model in (AllOf, AnyCondition, Not):
    _model.model_rebuild()
