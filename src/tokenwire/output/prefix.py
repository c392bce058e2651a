"""The part of a partial value that can still become a valid object: the prefix validator.

A streamed object is shown while it arrives (``structured.partial``); what is shown must never be
something the schema rules out. :func:`valid_prefix` takes the schema, the value parsed so far
and where the text stops (:class:`OpenTail`), and returns the value with every part removed or
cut that no valid object could have:

- a value of a type the schema forbids (``type``; ``false`` schemas);
- an enum or const string that is not a prefix of an allowed value while it is still being
  written, or not an allowed value once it is complete (any other enum/const value: once
  complete, as all of them are when shown);
- a string past ``maxLength`` (cut to it), items past ``maxItems`` and keys past
  ``maxProperties`` (the first ones kept), keys that ``additionalProperties: false`` forbids;
- a complete scalar that fails any of its own keywords (``minimum``, ``pattern``,
  ``minLength``, ``format``, ...).

Lower bounds of containers (``required``, ``minItems``, ``minProperties``) are not previews'
business: a missing key may still come, and once the object is whole the extraction validates
it and says ``structured.done`` or ``structured.error``. An array item that is removed cuts the
array there (later items would shift to the wrong index); an object key that is removed just goes.
Keywords it does not know (``not``, ``if``, remote ``$ref``) constrain nothing here: the preview
never hides a part of a valid object.

Pure: no state, no I/O; cost linear in the value's size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Literal

from .schema import ResolvedSchema


class _Hidden(Enum):
    HIDDEN = "HIDDEN"

    def __repr__(self) -> str:
        return "HIDDEN"


HIDDEN: Final = _Hidden.HIDDEN
"""Returned by :func:`valid_prefix` when nothing of the value can become valid."""


@dataclass(frozen=True, slots=True)
class OpenTail:
    """Where the JSON text stops: what along the value's last path is still being written.

    Only the last member of each open container can be open, so the open parts form one path
    from the top: ``containers`` open objects/arrays (0 once the value is complete), then, when
    ``string`` is true, the last value of the innermost of them is a string still being
    written (not a key: a key being written has no value in the parse yet).
    """

    containers: int
    string: bool = False


CLOSED: Final = OpenTail(0)
"""The tail of a complete value."""

_MAX_VERDICTS = 4096

# Keywords a scalar is checked against once complete (everything else is structure, handled here).
_STRUCTURE = frozenset(
    {
        "$ref",
        "$defs",
        "definitions",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "properties",
        "patternProperties",
        "additionalProperties",
        "items",
        "prefixItems",
        "additionalItems",
        "contains",
    }
)


def valid_prefix(
    schema: ResolvedSchema, value: Any, tail: OpenTail = CLOSED
) -> Any | Literal[_Hidden.HIDDEN]:
    """``value`` less what no object valid under ``schema`` could have; :data:`HIDDEN` when
    that is all of it. A value that is a prefix of a valid object comes back equal to itself."""
    return PrefixValidator(schema).prune(value, tail)


class PrefixValidator:
    """:func:`valid_prefix` for one schema, called again and again as one value streams: the
    per-keyword validators it builds are kept (they live as long as the schema)."""

    def __init__(self, schema: ResolvedSchema) -> None:
        self._resolved = schema
        self._root = schema.json_schema
        self._derefs: dict[int, Any] = {}
        self._scalar_checks: dict[int, Any] = {}
        self._verdicts: dict[tuple[int, type, Any], bool] = {}

    def prune(self, value: Any, tail: OpenTail = CLOSED) -> Any | Literal[_Hidden.HIDDEN]:
        """See :func:`valid_prefix`."""
        return self._prune(self._root, value, tail.containers, tail.string)

    def _prune(
        self, node: Any, value: Any, containers: int | None, open_string: bool
    ) -> Any | Literal[_Hidden.HIDDEN]:
        """``containers`` is None off the open path; else how many containers from this value
        down are open (so 0 means this value is complete, unless it is the open string)."""
        node = self._deref(node)
        if node is False:
            return HIDDEN
        if not isinstance(node, Mapping):
            return value  # true, or not a schema at all: no constraint
        for sub in node.get("allOf", ()):
            value = self._prune(sub, value, containers, open_string)
            if value is HIDDEN:
                return HIDDEN
        for keyword in ("anyOf", "oneOf"):
            branches = node.get(keyword)
            if branches:
                value = self._any_branch(branches, value, containers, open_string)
                if value is HIDDEN:
                    return HIDDEN
        if not _type_allows(node.get("type"), value):
            return HIDDEN
        is_open = containers is not None and containers > 0
        allowed = _allowed_values(node)
        if allowed is not None and isinstance(value, list | dict) and not is_open:
            if not any(_same(value, a) for a in allowed):
                return HIDDEN
        if isinstance(value, str):
            return self._string(node, value, containers == 0 and open_string)
        if isinstance(value, list):
            return self._array(node, value, containers if is_open else None, open_string)
        if isinstance(value, dict):
            return self._object(node, value, containers if is_open else None, open_string)
        return value if self._scalar_ok(node, value) else HIDDEN

    def _deref(self, node: Any) -> Any:
        if not isinstance(node, Mapping) or not isinstance(node.get("$ref"), str):
            return node
        # Kept by the identity of the schema's own node, which lives as long as the schema.
        key = id(node)
        found = self._derefs.get(key)
        if found is None:
            # A local $ref with sibling keywords applies both (2020-12): an allOf of the two.
            # A cycle of bare references ends as "no constraint".
            self._derefs[key] = True
            target = self._deref(_pointer(self._root, node["$ref"]))
            rest = {k: v for k, v in node.items() if k != "$ref"}
            found = target if not rest else {"allOf": [target, rest]}
            self._derefs[key] = found
        return found

    def _any_branch(
        self, branches: Any, value: Any, containers: int | None, open_string: bool
    ) -> Any | Literal[_Hidden.HIDDEN]:
        # A branch that keeps the value whole wins; else the first one that keeps some of it.
        fallback: Any = HIDDEN
        for branch in branches:
            pruned = self._prune(branch, value, containers, open_string)
            if pruned is not HIDDEN and _same(pruned, value):
                return value
            if fallback is HIDDEN:
                fallback = pruned
        return fallback

    def _string(self, node: Mapping[str, Any], value: str, is_open: bool) -> Any:
        limit = node.get("maxLength")
        if isinstance(limit, int) and len(value) > limit:
            value = value[:limit]
        allowed = _allowed_values(node)
        if is_open:
            # Any string may still become a pattern's match or reach minLength: only the enum
            # (a prefix of an allowed value) and the bounds rule an open one out.
            if allowed is not None and not any(
                isinstance(a, str) and a.startswith(value) for a in allowed
            ):
                return HIDDEN
            return value
        return value if self._scalar_ok(node, value) else HIDDEN

    def _array(
        self, node: Mapping[str, Any], value: list[Any], containers: int | None, open_string: bool
    ) -> Any:
        limit = node.get("maxItems")
        if isinstance(limit, int):
            value = value[:limit]
        prefix_items, rest_items = _item_schemas(node)
        out: list[Any] = []
        last = len(value) - 1
        for i, item in enumerate(value):
            sub = prefix_items[i] if i < len(prefix_items) else rest_items
            child = containers - 1 if containers is not None and i == last else None
            pruned = self._prune(sub, item, child, open_string)
            if pruned is HIDDEN:
                break
            out.append(pruned)
        return out

    def _object(
        self,
        node: Mapping[str, Any],
        value: dict[str, Any],
        containers: int | None,
        open_string: bool,
    ) -> Any:
        properties = node.get("properties") or {}
        patterns = node.get("patternProperties") or {}
        additional = node.get("additionalProperties", True)
        limit = node.get("maxProperties")
        out: dict[str, Any] = {}
        last = len(value) - 1
        for i, (key, item) in enumerate(value.items()):
            if isinstance(limit, int) and len(out) >= limit:
                break
            child = containers - 1 if containers is not None and i == last else None
            subs = [properties[key]] if key in properties else []
            subs += [s for p, s in patterns.items() if _search(p, key)]
            if not subs:
                subs = [additional]
            pruned: Any = item
            for sub in subs:
                pruned = self._prune(sub, pruned, child, open_string)
                if pruned is HIDDEN:
                    break
            if pruned is not HIDDEN:
                out[key] = pruned
        return out

    def _scalar_ok(self, node: Mapping[str, Any], value: Any) -> bool:
        key = id(node)
        if key not in self._scalar_checks:
            own = {k: v for k, v in node.items() if k not in _STRUCTURE}
            check = self._resolved.validator.evolve(schema=own) if own else None
            self._scalar_checks[key] = check
        check = self._scalar_checks[key]
        if check is None:
            return True
        # Every feed re-prunes the whole value, so the same complete scalars come back each
        # time: their verdicts are kept (by type too: True and 1 are different JSON values).
        verdict_key = (key, type(value), value)
        verdict = self._verdicts.get(verdict_key)
        if verdict is None:
            if len(self._verdicts) >= _MAX_VERDICTS:
                self._verdicts.clear()
            verdict = self._verdicts[verdict_key] = bool(check.is_valid(value))
        return verdict


def _pointer(root: Any, ref: str) -> Any:
    """The subschema a local ``$ref`` names; True (no constraint) for any other reference."""
    if not ref.startswith("#"):
        return True
    node = root
    for raw in ref[1:].split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return True
    return node


def _item_schemas(node: Mapping[str, Any]) -> tuple[list[Any], Any]:
    """The schemas of the first items, and of the items after them (2020-12 and older forms)."""
    items = node.get("items", True)
    if isinstance(items, list):  # draft 2019-09 and before: a tuple, then additionalItems
        return items, node.get("additionalItems", True)
    return list(node.get("prefixItems") or ()), items


def _allowed_values(node: Mapping[str, Any]) -> list[Any] | None:
    if "const" in node:
        return [node["const"]]
    enum = node.get("enum")
    return list(enum) if isinstance(enum, list) else None


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "number": (int, float),
    "integer": (int, float),
}


def _type_allows(types: Any, value: Any) -> bool:
    if types is None:
        return True
    names = [types] if isinstance(types, str) else list(types)
    return any(_is_type(name, value) for name in names)


def _is_type(name: str, value: Any) -> bool:
    kinds = _JSON_TYPES.get(name)
    if kinds is None:
        return True  # not a JSON Schema type name: not ours to judge
    if isinstance(value, bool) and name != "boolean":
        return False
    if not isinstance(value, kinds):
        return False
    return (
        name != "integer"
        or isinstance(value, int)
        or (isinstance(value, float) and value.is_integer())
    )


def _same(a: Any, b: Any) -> bool:
    # Equal as JSON: True and 1 are different values there, though == says otherwise.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _search(pattern: str, key: str) -> bool:
    try:
        return re.search(pattern, key) is not None
    except re.error:
        return False
