"""Schemas for extraction: named ones registered from config or pydantic models, or inline.

An extraction spec names its schema either inline (a JSON Schema dict) or by a registered name.
:meth:`SchemaRegistry.resolve` turns either into a :class:`ResolvedSchema`, which carries the
checked schema and its compiled validator, so every later validation reuses one compilation.

Schemas are checked when they enter (registration, or resolution of an inline one): an invalid
schema is a :class:`ValueError` that says what is wrong, never a surprise during a turn. The
draft is the one the schema's ``$schema`` names, else 2020-12. ``$ref`` resolves within the
schema only: nothing is fetched (jsonschema does not retrieve remote references).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class ResolvedSchema:
    """A checked JSON Schema, ready to validate against."""

    name: str | None
    """The registered name; None for an inline schema (``structured.done`` reports it)."""
    json_schema: dict[str, Any]
    validator: Validator = field(repr=False, compare=False)
    """The compiled validator (format checks on, as far as jsonschema can do them offline)."""
    model: type[BaseModel] | None = field(default=None, compare=False)
    """The pydantic model it came from, so Python code can build typed values from the data."""


def check_schema(json_schema: object, *, what: str = "schema") -> ResolvedSchema:
    """Check one JSON Schema and compile its validator; unnamed. Raises ``ValueError``."""
    if not isinstance(json_schema, dict):
        raise ValueError(f"{what} must be a JSON Schema object, not {type(json_schema).__name__}")
    cls = jsonschema.validators.validator_for(json_schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(json_schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ValueError(f"{what} is not a valid JSON Schema at {where}: {exc.message}") from None
    validator = cls(json_schema, format_checker=cls.FORMAT_CHECKER)
    return ResolvedSchema(name=None, json_schema=json_schema, validator=validator)


class SchemaRegistry:
    """Named schemas. Register at start-up; resolve per request.

    A name is registered once: registering it again with a different schema is a
    ``ValueError`` (two modules disagreeing about a schema is a bug to hear about).
    """

    def __init__(self, schemas: Mapping[str, dict[str, Any]] | None = None) -> None:
        self._schemas: dict[str, ResolvedSchema] = {}
        for name, json_schema in (schemas or {}).items():
            self.register(name, json_schema)

    def register(self, name: str, json_schema: dict[str, Any]) -> ResolvedSchema:
        """Register a JSON Schema dict (from config) under ``name``."""
        return self._add(name, json_schema, None)

    def register_model(self, model: type[BaseModel], name: str | None = None) -> ResolvedSchema:
        """Register a pydantic model's JSON Schema, under ``name`` or the model's class name."""
        return self._add(name or model.__name__, model.model_json_schema(), model)

    def _add(
        self, name: str, json_schema: dict[str, Any], model: type[BaseModel] | None
    ) -> ResolvedSchema:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a schema name must be a non-empty string")
        checked = check_schema(json_schema, what=f"schema {name!r}")
        resolved = ResolvedSchema(
            name=name, json_schema=checked.json_schema, validator=checked.validator, model=model
        )
        existing = self._schemas.get(name)
        if existing is not None:
            if existing.json_schema == json_schema and existing.model is model:
                return existing
            raise ValueError(f"schema {name!r} is already registered with a different schema")
        self._schemas[name] = resolved
        return resolved

    def resolve(self, spec_schema: str | dict[str, Any]) -> ResolvedSchema:
        """The schema an extraction spec names: a registered name, or an inline schema.

        Raises ``ValueError`` for an unknown name (listing the known ones) or an invalid schema.
        """
        if isinstance(spec_schema, str):
            found = self._schemas.get(spec_schema)
            if found is None:
                known = ", ".join(sorted(self._schemas)) or "none"
                raise ValueError(f"unknown schema {spec_schema!r} (registered: {known})")
            return found
        return check_schema(spec_schema, what="the inline schema")

    def __contains__(self, name: object) -> bool:
        return name in self._schemas

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._schemas))

    def __len__(self) -> int:
        return len(self._schemas)
