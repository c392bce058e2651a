"""Configuration errors as people read them: one line each, with where the value came from.

``tokenwire.toml: providers.local.n_thread: unknown key (did you mean 'n_threads'?)`` instead of
pydantic's multi-line report. The key path is the one the user wrote (a discriminated union's
tag, which pydantic puts in the location, is left out); the source is the environment variable
when one sets that key, else the file.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

ENV_PREFIX = "TOKENWIRE_"


class ConfigError(ValueError):
    """The configuration is invalid: :attr:`lines` says why, one line per error."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


def config_error(
    exc: ValidationError,
    model: type[BaseModel],
    *,
    source: Path | None,
    environ: Mapping[str, str] | None = None,
) -> ConfigError:
    """The :class:`ConfigError` for ``exc`` raised while validating ``model``."""
    env = os.environ if environ is None else environ
    return ConfigError([_line(error, model, source, env) for error in exc.errors()])


def _line(
    error: ErrorDetails, model: type[BaseModel], source: Path | None, env: Mapping[str, str]
) -> str:
    path, siblings = _walk(model, error["loc"])
    where = _source(path, source, env)
    key = ".".join(path)
    kind = error["type"]
    if kind == "extra_forbidden":
        what = "unknown key"
        close = difflib.get_close_matches(path[-1], siblings, n=1, cutoff=0.6) if path else []
        if close:
            what += f" (did you mean {close[0]!r}?)"
    elif kind in ("union_tag_not_found", "union_tag_invalid"):
        what = f"`kind` must be one of: {', '.join(_tags(error))}"
    else:
        what = error["msg"].removeprefix("Value error, ")
        if kind not in ("value_error", "assertion_error", "missing") and _short(error["input"]):
            what += f" (got {error['input']!r})"
    return f"{where}: {key}: {what}" if key else f"{where}: {what}"


def _walk(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[list[str], list[str]]:
    """The key path the user wrote, and the keys allowed beside its last part."""
    path: list[str] = []
    node: Any = model
    siblings: list[str] = []
    for part in loc:
        node = _unwrap(node)
        if _is_model(node):
            siblings = list(node.model_fields)
            field = node.model_fields.get(str(part))
            path.append(str(part))
            node = field.annotation if field is not None else None
        elif isinstance(node, tuple):  # a union: the location names the chosen member's tag
            member = next((m for m in node if _tag(m) == part), None)
            if member is not None:
                node = member
                continue
            path.append(str(part))
            node = None
        elif typing.get_origin(node) in (dict, Mapping):
            path.append(str(part))
            node = typing.get_args(node)[1]
        elif typing.get_origin(node) in (list, Sequence):
            path.append(str(part))
            node = typing.get_args(node)[0]
        else:
            path.append(str(part))
            node = None
    return path, siblings


def _unwrap(node: Any) -> Any:
    """Annotated and Optional peeled off; a union of models as a tuple of them."""
    while typing.get_origin(node) is typing.Annotated:
        node = typing.get_args(node)[0]
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(node) if m is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
        return tuple(_unwrap(m) for m in members)
    return node


def _is_model(node: Any) -> bool:
    return isinstance(node, type) and issubclass(node, BaseModel)


def _tag(member: Any) -> Any:
    if not _is_model(member):
        return None
    field = member.model_fields.get("kind")
    return field.default if field is not None else None


def _tags(error: ErrorDetails) -> list[str]:
    ctx = error.get("ctx") or {}
    expected = str(ctx.get("expected_tags", ""))
    return [t.strip().strip("'") for t in expected.split(",") if t.strip()] or ["?"]


def _short(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 60


def _source(path: list[str], source: Path | None, env: Mapping[str, str]) -> str:
    """The environment variable that sets this key (or a table of keys under it), else the
    file."""
    if path:
        name = ENV_PREFIX + "__".join(path).upper()
        matching = sorted(v for v in env if v.upper() == name or v.upper().startswith(name + "__"))
        if matching:
            return matching[0]
    return str(source) if source is not None else "settings"


__all__ = ["ConfigError", "config_error"]
