"""Tool definitions: the JSON Schema derived from type hints and docstrings, and the registry."""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from tokenwire.providers import ToolSpec
from tokenwire.tools import (
    ToolDefinition,
    ToolRegistry,
    get_tool_definition,
    load_tool_modules,
    parse_docstring,
    tool,
)

from . import sample_tools


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: int
    y: int = 0


class Tree(BaseModel):
    label: str
    children: list[Tree] = []


def schema_of(fn: Any) -> dict[str, Any]:
    return dict(ToolDefinition.from_function(fn).parameters)


def has_key(node: Any, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(has_key(value, key) for value in node.values())
    if isinstance(node, list):
        return any(has_key(item, key) for item in node)
    return False


# -- schema ------------------------------------------------------------------------------------


def test_scalar_types_required_and_defaults() -> None:
    def search(query: str, limit: int, ratio: float, exact: bool = False, page: int = 1) -> None:
        """Search."""

    assert schema_of(search) == {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": "integer"},
            "ratio": {"type": "number"},
            "exact": {"type": "boolean", "default": False},
            "page": {"type": "integer", "default": 1},
        },
        "required": ["query", "limit", "ratio"],
        "additionalProperties": False,
    }


def test_list_literal_enum_optional() -> None:
    def f(
        tags: list[str],
        mode: Literal["fast", "slow"],
        color: Color,
        note: str | None = None,
        maybe: int | None = None,
    ) -> None:
        pass

    props = schema_of(f)["properties"]
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["mode"] == {"type": "string", "enum": ["fast", "slow"]}
    assert props["color"] == {"type": "string", "enum": ["red", "blue"]}  # inlined, no $ref
    assert props["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert props["maybe"]["default"] is None
    assert schema_of(f)["required"] == ["tags", "mode", "color"]


def test_no_title_noise_and_no_refs() -> None:
    def f(title: str, point: Point, color: Color = Color.RED) -> None:
        pass

    schema = schema_of(f)
    assert "title" not in schema
    assert "title" in schema["properties"]  # a parameter called "title" stays
    assert schema["properties"]["title"] == {"type": "string"}
    point = schema["properties"]["point"]
    assert point["properties"] == {"x": {"type": "integer"}, "y": {"type": "integer", "default": 0}}
    assert not has_key(point, "title")
    assert schema["properties"]["color"] == {
        "type": "string",
        "enum": ["red", "blue"],
        "default": "red",
    }
    assert not has_key(schema, "$ref") and "$defs" not in schema


def test_recursive_model_keeps_its_refs() -> None:
    def f(tree: Tree) -> None:
        pass

    schema = schema_of(f)
    assert "$defs" in schema and "Tree" in schema["$defs"]
    assert schema["properties"]["tree"] == {"$ref": "#/$defs/Tree"}


def test_no_parameters() -> None:
    def ping() -> str:
        """Ping."""
        return "pong"

    assert schema_of(ping) == {"type": "object", "properties": {}, "additionalProperties": False}


def test_annotated_descriptions_and_constraints() -> None:
    def f(
        query: Annotated[str, Field(description="What to find.", min_length=1)],
        limit: Annotated[int, Field(description="How many.", ge=1, le=10)] = 5,
    ) -> None:
        pass

    props = schema_of(f)["properties"]
    assert props["query"] == {"type": "string", "description": "What to find.", "minLength": 1}
    assert props["limit"] == {
        "type": "integer",
        "description": "How many.",
        "minimum": 1,
        "maximum": 10,
        "default": 5,
    }


def test_google_docstring() -> None:
    def weather(city: str, unit: str = "C", days: int = 1) -> None:
        """The current weather
        in a city.

        Uses a public service.

        Args:
            city: The city's name,
                e.g. "Berlin".
            unit (str): Celsius or Fahrenheit.
            days: How many days ahead.

        Returns:
            The forecast.
        """

    definition = ToolDefinition.from_function(weather)
    assert definition.description == "The current weather in a city."
    props = definition.parameters["properties"]
    assert props["city"]["description"] == 'The city\'s name, e.g. "Berlin".'
    assert props["unit"]["description"] == "Celsius or Fahrenheit."
    assert props["days"]["description"] == "How many days ahead."


def test_sphinx_docstring() -> None:
    def f(query: str, limit: int = 3) -> None:
        """Search the index.
        :param query: the text
            to look for
        :param int limit: how many results
        :returns: the results
        """

    definition = ToolDefinition.from_function(f)
    assert definition.description == "Search the index."
    props = definition.parameters["properties"]
    assert props["query"]["description"] == "the text to look for"
    assert props["limit"]["description"] == "how many results"


def test_numpy_docstring() -> None:
    summary, params = parse_docstring(
        """Add numbers.

        Parameters
        ----------
        a : int
            The first.
        b : int
            The second,
            continued.

        Returns
        -------
        int
            The sum.
        """
    )
    assert summary == "Add numbers."
    assert params == {"a": "The first.", "b": "The second, continued."}


def test_annotated_description_wins_over_docstring() -> None:
    def f(q: Annotated[str, Field(description="from Field")]) -> None:
        """F.

        Args:
            q: from docstring
        """

    assert schema_of(f)["properties"]["q"]["description"] == "from Field"


def test_description_defaults_and_overrides() -> None:
    def undocumented(x: int) -> None:
        pass

    assert ToolDefinition.from_function(undocumented).description == ""
    definition = ToolDefinition.from_function(undocumented, name="u", description="Custom.")
    assert (definition.name, definition.description) == ("u", "Custom.")


def test_string_annotations_are_resolved() -> None:
    # this module uses `from __future__ import annotations`: every hint above was a string
    definition = ToolDefinition.from_function(sample_tools.first)
    assert definition.parameters["properties"] == {"text": {"type": "string"}}


def test_keyword_only_parameters_are_fine() -> None:
    def f(*, a: int, b: str = "x") -> None:
        pass

    assert schema_of(f)["required"] == ["a"]


def test_validator_fills_defaults_and_coerces() -> None:
    def f(a: int, color: Color = Color.RED, point: Point | None = None) -> None:
        pass

    definition = ToolDefinition.from_function(f)
    assert definition.validate_arguments({"a": "7", "point": {"x": 1}}) == {
        "a": 7,
        "color": Color.RED,
        "point": Point(x=1, y=0),
    }
    with pytest.raises(ValidationError):
        definition.validate_arguments({"a": 1, "unexpected": 2})
    with pytest.raises(ValidationError):
        definition.validate_arguments({})


def test_parameter_names_that_shadow_pydantic_attributes() -> None:
    def f(json: str, model_config: int = 1, schema: str = "s", copy: bool = False) -> None:
        pass

    definition = ToolDefinition.from_function(f)  # no warnings (filterwarnings=error)
    assert definition.parameters["required"] == ["json"]
    assert definition.validate_arguments({"json": "x"}) == {
        "json": "x",
        "model_config": 1,
        "schema": "s",
        "copy": False,
    }


def test_is_async_and_timeout() -> None:
    async def a(x: int) -> int:
        return x

    def s(x: int) -> int:
        return x

    assert ToolDefinition.from_function(a, timeout_s=2).is_async
    assert ToolDefinition.from_function(a, timeout_s=2).timeout_s == 2
    assert not ToolDefinition.from_function(s).is_async


def test_partial_and_bound_method() -> None:
    def base(prefix: str, text: str) -> str:
        return prefix + text

    class Greeter:
        def greet(self, name: str) -> str:
            """Greet someone."""
            return f"hi {name}"

    partial_def = ToolDefinition.from_function(functools.partial(base, "x"), name="p")
    assert partial_def.parameters["required"] == ["text"]
    method_def = ToolDefinition.from_function(Greeter().greet)
    assert method_def.name == "greet"
    assert method_def.parameters["required"] == ["name"]


# -- rejected signatures and names ---------------------------------------------------------------


def test_bad_signatures_are_rejected() -> None:
    def star_args(*args: int) -> None:
        pass

    def star_kwargs(**kwargs: int) -> None:
        pass

    def positional_only(a: int, /) -> None:
        pass

    def unannotated(a, b: int) -> None:  # type: ignore[no-untyped-def]
        pass

    def generator(a: int) -> Any:
        yield a

    class Opaque:
        pass

    def opaque(thing: Opaque) -> None:
        pass

    cases: list[tuple[Callable[..., Any], str]] = [
        (star_args, r"\*args"),
        (star_kwargs, r"\*\*kwargs"),
        (positional_only, "positional-only"),
        (unannotated, "parameter 'a': a type annotation is required"),
        (generator, "generator"),
        (opaque, "cannot resolve its type hints .*'Opaque' is not defined"),  # a local class
    ]
    for fn, message in cases:
        with pytest.raises(TypeError, match=message):
            ToolDefinition.from_function(fn)
    with pytest.raises(TypeError, match=r"\*args"):
        tool(star_args)


def test_unsupported_type_that_resolves() -> None:
    with pytest.raises(TypeError, match="unsupported parameter types"):
        ToolDefinition.from_function(_takes_opaque)


class _Opaque:
    pass


def _takes_opaque(thing: _Opaque) -> None:
    pass


@pytest.mark.parametrize("name", ["", "has space", "dots.not.allowed", "x" * 65, "ünï"])
def test_invalid_names(name: str) -> None:
    def f() -> None:
        pass

    with pytest.raises(ValueError, match="invalid tool name"):
        ToolDefinition.from_function(f, name=name)


def test_lambda_needs_a_name() -> None:
    with pytest.raises(ValueError, match="pass name="):
        ToolDefinition.from_function(lambda: None)
    assert ToolDefinition.from_function(lambda: None, name="noop").name == "noop"


def test_valid_names() -> None:
    def f() -> None:
        pass

    for name in ["a", "A-b_9", "x" * 64]:
        assert ToolDefinition.from_function(f, name=name).name == name


def test_timeout_must_be_positive() -> None:
    def f() -> None:
        pass

    with pytest.raises(ValueError, match="timeout_s"):
        ToolDefinition.from_function(f, timeout_s=0)


# -- the decorator -------------------------------------------------------------------------------


def test_decorator_bare_and_with_arguments() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @tool(name="mul", description="Multiply.", timeout_s=1.5)
    async def multiply(a: int, b: int) -> int:
        return a * b

    assert add(2, 3) == 5  # still the plain function
    definition = get_tool_definition(add)
    assert definition is not None
    assert (definition.name, definition.description, definition.function) == (
        "add",
        "Add two numbers.",
        add,
    )
    other = get_tool_definition(multiply)
    assert other is not None
    assert (other.name, other.description, other.timeout_s, other.is_async) == (
        "mul",
        "Multiply.",
        1.5,
        True,
    )
    assert get_tool_definition(len) is None


# -- the registry --------------------------------------------------------------------------------


def test_register_and_look_up() -> None:
    def plain(x: int) -> int:
        """Plain."""
        return x

    registry = ToolRegistry()
    definition = registry.register(plain)
    assert registry.register(sample_tools.first).name == "first"
    assert registry.names == ("plain", "first")
    assert registry.definitions == (definition, registry.get("first"))
    assert "plain" in registry and "nope" not in registry
    assert len(registry) == 2
    assert registry.get("plain") is definition
    assert registry.specs(["first"]) == (
        ToolSpec(
            name="first",
            description="The first tool.",
            parameters=registry.get("first").parameters,
        ),
    )
    assert [spec.name for spec in registry.specs()] == ["plain", "first"]
    assert [spec.name for spec in registry.specs(["first", "plain", "first"])] == [
        "first",
        "plain",
    ]


def test_register_with_overrides() -> None:
    registry = ToolRegistry()
    definition = registry.register(sample_tools.first, name="echo", timeout_s=9)
    assert (definition.name, definition.timeout_s) == ("echo", 9)
    # the marked definition itself is unchanged
    marked = get_tool_definition(sample_tools.first)
    assert marked is not None and marked.name == "first"
    again = registry.register(marked, name="echo2", description="Echo.")
    assert (again.name, again.description) == ("echo2", "Echo.")


def test_duplicate_names_are_rejected() -> None:
    registry = ToolRegistry([sample_tools.first])
    with pytest.raises(ValueError, match="'first' is already registered"):
        registry.register(sample_tools.first)

    def first(y: int) -> int:
        return y

    with pytest.raises(ValueError, match="already registered"):
        registry.register(first)
    assert registry.register(first, name="first_2").name == "first_2"


def test_unknown_names() -> None:
    registry = ToolRegistry([sample_tools.first])
    with pytest.raises(KeyError, match=r"unknown tool 'nope'.*registered: first"):
        registry.get("nope")
    with pytest.raises(KeyError, match="unknown tools 'a', 'b'"):
        registry.specs(["first", "a", "b"])
    with pytest.raises(KeyError, match="none registered"):
        ToolRegistry().specs(["x"])


def test_add_module() -> None:
    registry = ToolRegistry()
    added = registry.add_module(sample_tools)
    assert [d.name for d in added] == ["first", "second-tool"]
    assert registry.names == ("first", "second-tool")
    assert registry.get("second-tool").timeout_s == 3
    assert registry.get("second-tool").is_async

    by_name = ToolRegistry()
    by_name.add_module("tests.tools.sample_tools")
    assert by_name.names == ("first", "second-tool")
    with pytest.raises(ValueError, match="already registered: first, second-tool"):
        by_name.add_module(sample_tools)
    assert by_name.names == ("first", "second-tool")  # nothing half-added


def test_load_tool_modules(caplog: pytest.LogCaptureFixture) -> None:
    registry = ToolRegistry()
    added = load_tool_modules(["tests.tools.sample_tools", "tests.tools.empty_tools"], registry)
    assert [d.name for d in added] == ["first", "second-tool"]
    assert "tests.tools.empty_tools defines no @tool functions" in caplog.text

    with pytest.raises(ValueError, match=r"cannot import tool module 'tests\.tools\.missing'"):
        load_tool_modules(["tests.tools.missing"], ToolRegistry())
