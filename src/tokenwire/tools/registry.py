"""Python functions the model may call: their definitions, and the registry that holds them.

A tool is a plain function (sync or async) with type hints::

    @tool
    async def weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, Any]:
        \"\"\"The current weather in a city.

        Args:
            city: The city's name, e.g. "Berlin".
            unit: Celsius or Fahrenheit.
        \"\"\"

:func:`tool` marks the function (it stays callable as before) with a :class:`ToolDefinition`:
its name, the description the model reads (the docstring's first paragraph), and the JSON
Schema of its arguments, derived from the type hints with pydantic (required: the parameters
without a default; descriptions from ``Annotated[..., Field(description=...)]`` or the
docstring's ``Args:`` / ``:param x:`` / NumPy ``Parameters`` section). The same pydantic model
validates the arguments the model writes before the function is called.

A :class:`ToolRegistry` holds the tools a deployment offers, by name; :meth:`ToolRegistry.specs`
turns a route's tool names into the :class:`~tokenwire.providers.ToolSpec` list a provider
sends upstream.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Annotated, Any, TypeVar, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, create_model
from pydantic.errors import PydanticSchemaGenerationError

from ..providers import ToolSpec

logger = logging.getLogger("tokenwire.tools")

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What a tool name may look like (OpenAI's rule, the strictest of the vendors)."""

_MARKER = "__tool_definition__"

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ToolDefinition:
    """One tool: what the model is told about it, and how to call it.

    Build one with :meth:`from_function` (or :func:`tool`); construct it directly only with a
    ``validator`` that matches ``parameters``.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    """The arguments' JSON Schema: an object schema, ``additionalProperties: false``."""
    function: Callable[..., Any]
    is_async: bool
    """``function`` returns an awaitable (run on the event loop; sync ones run in a thread)."""
    timeout_s: float | None
    """This tool's own time limit; ``None``: the runner's default applies."""
    validator: type[BaseModel]
    """Validates the arguments; each field's alias is the parameter's name."""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(
                f"invalid tool name {self.name!r}: it must be 1-64 letters, digits, '_' or '-'"
            )
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"tool {self.name!r}: timeout_s must be > 0, not {self.timeout_s}")

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float | None = None,
    ) -> ToolDefinition:
        """Derive the definition from ``fn``'s signature, type hints and docstring.

        Raises ``TypeError`` for a signature a model cannot call (``*args``, ``**kwargs``,
        positional-only or unannotated parameters, generators, types pydantic cannot
        validate) and ``ValueError`` for an invalid name.
        """
        target = fn.func if isinstance(fn, functools.partial) else fn
        tool_name = name if name is not None else getattr(target, "__name__", type(fn).__name__)
        if not callable(fn):
            raise TypeError(f"tool {tool_name!r}: {fn!r} is not callable")
        if not NAME_PATTERN.fullmatch(tool_name):
            raise ValueError(
                f"invalid tool name {tool_name!r}: it must be 1-64 letters, digits, '_' or '-'"
                + (" (pass name=...)" if name is None else "")
            )
        if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
            raise TypeError(f"tool {tool_name!r}: generator functions are not supported")
        summary, arg_docs = parse_docstring(inspect.getdoc(target))
        validator, parameters = _arguments_schema(tool_name, fn, target, arg_docs)
        return cls(
            name=tool_name,
            description=description if description is not None else summary,
            parameters=parameters,
            function=fn,
            is_async=_is_async(fn),
            timeout_s=timeout_s,
            validator=validator,
        )

    @property
    def spec(self) -> ToolSpec:
        """What a provider sends upstream."""
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    def validate_arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments to call ``function`` with (defaults filled in).

        Raises ``pydantic.ValidationError`` when they do not match the schema.
        """
        model = self.validator.model_validate(arguments)
        return {
            field.alias or key: getattr(model, key)
            for key, field in type(model).model_fields.items()
        }

    def with_overrides(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float | None = None,
    ) -> ToolDefinition:
        """A copy with the given attributes replaced (``None``: keep)."""
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if description is not None:
            changes["description"] = description
        if timeout_s is not None:
            changes["timeout_s"] = timeout_s
        return dataclasses.replace(self, **changes) if changes else self


@overload
def tool(
    fn: _F,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
) -> _F: ...


@overload
def tool(
    fn: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
) -> Callable[[_F], _F]: ...


def tool(
    fn: _F | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
) -> _F | Callable[[_F], _F]:
    """Mark a function as a tool: ``@tool`` or ``@tool(name=..., description=...,
    timeout_s=...)``.

    The function is returned unchanged (still directly callable); its :class:`ToolDefinition`
    is built now, so a bad signature fails at import, and is found by
    :meth:`ToolRegistry.add_module` and :func:`get_tool_definition`.
    """

    def mark(function: _F) -> _F:
        definition = ToolDefinition.from_function(
            function, name=name, description=description, timeout_s=timeout_s
        )
        try:
            setattr(function, _MARKER, definition)
        except (AttributeError, TypeError):
            raise TypeError(
                f"@tool decorates functions; register {function!r} with ToolRegistry.register"
            ) from None
        return function

    return mark(fn) if fn is not None else mark


def get_tool_definition(obj: object) -> ToolDefinition | None:
    """The definition :func:`tool` attached to ``obj``, if any."""
    definition = getattr(obj, _MARKER, None)
    return definition if isinstance(definition, ToolDefinition) else None


class ToolRegistry:
    """The tools on offer, by name (registration order is kept)."""

    def __init__(self, tools: Iterable[Callable[..., Any] | ToolDefinition] = ()) -> None:
        self._tools: dict[str, ToolDefinition] = {}
        for item in tools:
            self.register(item)

    def register(
        self,
        fn_or_definition: Callable[..., Any] | ToolDefinition,
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float | None = None,
    ) -> ToolDefinition:
        """Add a tool: a :class:`ToolDefinition`, a function marked with :func:`tool`, or any
        other function (its definition is derived here). The keyword arguments override the
        definition's. A name already registered raises ``ValueError``."""
        if isinstance(fn_or_definition, ToolDefinition):
            definition = fn_or_definition.with_overrides(
                name=name, description=description, timeout_s=timeout_s
            )
        elif (marked := get_tool_definition(fn_or_definition)) is not None:
            definition = marked.with_overrides(
                name=name, description=description, timeout_s=timeout_s
            )
        else:
            definition = ToolDefinition.from_function(
                fn_or_definition, name=name, description=description, timeout_s=timeout_s
            )
        if definition.name in self._tools:
            raise ValueError(f"a tool named {definition.name!r} is already registered")
        self._tools[definition.name] = definition
        return definition

    def add_module(self, module: ModuleType | str) -> tuple[ToolDefinition, ...]:
        """Register every function of ``module`` (or the module with that dotted name) that
        carries the :func:`tool` marker, in definition order; returns what was added.
        ``ImportError`` propagates."""
        if isinstance(module, str):
            module = importlib.import_module(module)
        found: list[ToolDefinition] = []
        for value in list(vars(module).values()):
            definition = get_tool_definition(value)
            if definition is not None and all(definition is not seen for seen in found):
                found.append(definition)
        clashes = [d.name for d in found if d.name in self._tools]
        if clashes:
            raise ValueError(
                f"module {module.__name__!r}: tools already registered: {', '.join(clashes)}"
            )
        return tuple(self.register(definition) for definition in found)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    @property
    def definitions(self) -> tuple[ToolDefinition, ...]:
        return tuple(self._tools.values())

    def get(self, name: str) -> ToolDefinition:
        """The tool called ``name``; ``KeyError`` (naming it) if there is none."""
        try:
            return self._tools[name]
        except KeyError:
            raise KeyError(f"unknown tool {name!r}{self._known()}") from None

    def specs(self, names: Iterable[str] | None = None) -> tuple[ToolSpec, ...]:
        """The specs of the named tools, in the order given (each once); ``None``: all.
        ``KeyError`` names any unknown tool."""
        if names is None:
            return tuple(definition.spec for definition in self._tools.values())
        wanted = list(dict.fromkeys(names))
        unknown = [name for name in wanted if name not in self._tools]
        if unknown:
            listed = ", ".join(repr(name) for name in unknown)
            raise KeyError(f"unknown tool{'s' if len(unknown) > 1 else ''} {listed}{self._known()}")
        return tuple(self._tools[name].spec for name in wanted)

    def _known(self) -> str:
        return f" (registered: {', '.join(self._tools)})" if self._tools else " (none registered)"

    def __repr__(self) -> str:
        return f"ToolRegistry({list(self._tools)!r})"


def load_tool_modules(names: Sequence[str], registry: ToolRegistry) -> tuple[ToolDefinition, ...]:
    """Import each dotted module name and register its :func:`tool` functions in ``registry``.

    A module that cannot be imported raises ``ValueError`` naming it (a configuration error);
    one without tools is logged.
    """
    added: list[ToolDefinition] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"cannot import tool module {name!r}: {exc}") from exc
        definitions = registry.add_module(module)
        if not definitions:
            logger.warning("tool module %s defines no @tool functions", name)
        added.extend(definitions)
    return tuple(added)


# -- the arguments' schema ---------------------------------------------------------------------


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object's async __call__
    return (
        not inspect.isfunction(fn)
        and not inspect.ismethod(fn)
        and call is not None
        and inspect.iscoroutinefunction(call)
    )


def _arguments_schema(
    tool_name: str,
    fn: Callable[..., Any],
    target: Callable[..., Any],
    arg_docs: Mapping[str, str],
) -> tuple[type[BaseModel], dict[str, Any]]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"tool {tool_name!r}: cannot read its signature: {exc}") from exc
    hints_of: Any = target
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        hints_of = getattr(target, "__call__", target)  # noqa: B004 - a callable object
    try:
        hints = get_type_hints(hints_of, include_extras=True)
    except Exception as exc:
        raise TypeError(
            f"tool {tool_name!r}: cannot resolve its type hints ({type(exc).__name__}: {exc}); "
            "the types must be importable from the tool's module"
        ) from exc

    fields: dict[str, Any] = {}
    for index, (param_name, param) in enumerate(signature.parameters.items()):
        where = f"tool {tool_name!r}, parameter {param_name!r}"
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise TypeError(f"{where}: *args is not supported (a model passes named arguments)")
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"{where}: **kwargs is not supported (list the arguments)")
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"{where}: positional-only parameters are not supported")
        if param_name not in hints:
            raise TypeError(f"{where}: a type annotation is required")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[f"p{index}"] = (Annotated[hints[param_name], Field(alias=param_name)], default)

    try:
        validator: type[BaseModel] = create_model(
            "Arguments",
            __config__=ConfigDict(extra="forbid", populate_by_name=False),
            **fields,
        )
        raw = validator.model_json_schema(by_alias=True)
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as exc:
        raise TypeError(f"tool {tool_name!r}: unsupported parameter types: {exc}") from exc

    schema = _strip_titles(_inline_refs(raw))
    properties: dict[str, Any] = dict(schema.get("properties", {}))
    for param_name, text in arg_docs.items():
        prop = properties.get(param_name)
        if isinstance(prop, dict) and "description" not in prop:
            properties[param_name] = {"description": text, **prop}
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if schema.get("required"):
        parameters["required"] = list(schema["required"])
    parameters["additionalProperties"] = False
    if "$defs" in schema:  # recursive types keep their references
        parameters["$defs"] = schema["$defs"]
    return validator, parameters


_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties"})
_SCHEMA_VALUES = frozenset({"default", "enum", "const", "examples"})


def _strip_titles(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's generated ``title`` keys (never a property that is called ``title``)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _SCHEMA_VALUES:
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {
                name: _strip_titles(sub) if isinstance(sub, dict) else sub
                for name, sub in value.items()
            }
        elif isinstance(value, dict):
            out[key] = _strip_titles(value)
        elif isinstance(value, list):
            out[key] = [_strip_titles(item) if isinstance(item, dict) else item for item in value]
        else:
            out[key] = value
    return out


class _Recursive(Exception):
    pass


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace ``$ref`` to ``$defs`` with the definitions themselves (simpler for the grammar
    builders of small models); a recursive schema is returned as it was."""
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return schema

    def resolve(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, stack) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            key = ref.removeprefix("#/$defs/")
            if key in stack or key not in defs:
                raise _Recursive
            rest = {k: resolve(v, stack) for k, v in node.items() if k != "$ref"}
            return {**resolve(defs[key], (*stack, key)), **rest}
        return {
            k: v if k in _SCHEMA_VALUES else resolve(v, stack)
            for k, v in node.items()
            if k != "$defs"
        }

    try:
        result: dict[str, Any] = resolve(schema, ())
    except _Recursive:
        return schema
    return result


# -- docstrings --------------------------------------------------------------------------------

_GOOGLE_ARGS = re.compile(
    r"(args|arguments|parameters|params|keyword args|keyword arguments)\s*:", re.IGNORECASE
)
_GOOGLE_SECTION = re.compile(
    r"(args|arguments|parameters|params|keyword args|keyword arguments|returns?|yields?|raises|"
    r"examples?|notes?|attributes|see also|warnings?|todo)\s*:",
    re.IGNORECASE,
)
_GOOGLE_ENTRY = re.compile(r"\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:(?:\s+(.*))?")
_SPHINX_PARAM = re.compile(r":param\s+([^:]+?)\s*:(?:\s*(.*))?")
_NUMPY_ENTRY = re.compile(r"\*{0,2}(\w+)\s*(?::.*)?")
_UNDERLINE = re.compile(r"-{3,}\s*")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The first paragraph of a docstring (joined to one line) and the parameter descriptions
    of its Google (``Args:``), Sphinx (``:param x:``) or NumPy (``Parameters``) section."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()

    def is_header(i: int) -> bool:
        text = lines[i].strip()
        if _GOOGLE_SECTION.fullmatch(text) or text.startswith(":"):
            return True
        return i + 1 < len(lines) and bool(_UNDERLINE.fullmatch(lines[i + 1].strip()))

    summary: list[str] = []
    for i, line in enumerate(lines):
        if not line.strip() or is_header(i):
            break
        summary.append(line.strip())

    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        if _GOOGLE_ARGS.fullmatch(text):
            i = _google_args(lines, i + 1, indent, params)
            continue
        if (m := _SPHINX_PARAM.fullmatch(text)) is not None:
            name = m.group(1).split()[-1]
            parts = [m.group(2) or ""]
            i += 1
            while i < len(lines) and lines[i].strip() and lines[i][:1].isspace():
                parts.append(lines[i].strip())
                i += 1
            _put(params, name, parts)
            continue
        if text.lower() in ("parameters", "other parameters") and (
            i + 1 < len(lines) and _UNDERLINE.fullmatch(lines[i + 1].strip())
        ):
            i = _numpy_args(lines, i + 2, indent, params)
            continue
        i += 1
    return " ".join(summary), params


def _google_args(lines: list[str], i: int, header_indent: int, params: dict[str, str]) -> int:
    entry_indent: int | None = None
    name: str | None = None
    parts: list[str] = []
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= header_indent:
            break
        if entry_indent is None:
            entry_indent = indent
        if indent <= entry_indent:
            if name is not None:
                _put(params, name, parts)
            m = _GOOGLE_ENTRY.fullmatch(line.strip())
            name, parts = (m.group(1), [m.group(2) or ""]) if m else (None, [])
        elif name is not None:
            parts.append(line.strip())
        i += 1
    if name is not None:
        _put(params, name, parts)
    return i


def _numpy_args(lines: list[str], i: int, header_indent: int, params: dict[str, str]) -> int:
    name: str | None = None
    parts: list[str] = []
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= header_indent:
            if i + 1 < len(lines) and _UNDERLINE.fullmatch(lines[i + 1].strip()):
                break  # the next section
            if name is not None:
                _put(params, name, parts)
            m = _NUMPY_ENTRY.fullmatch(line.strip())
            name, parts = (m.group(1), []) if m else (None, [])
        elif name is not None:
            parts.append(line.strip())
        i += 1
    if name is not None:
        _put(params, name, parts)
    return i


def _put(params: dict[str, str], name: str, parts: list[str]) -> None:
    text = " ".join(part for part in parts if part).strip()
    if text:
        params.setdefault(name, text)
