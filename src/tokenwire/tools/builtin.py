"""Tools that come with tokenwire: the time, arithmetic, and a knowledge-base search factory."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from .registry import ToolDefinition, ToolRegistry, tool

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000
MAX_INT_BITS = 4096
"""Integers beyond this size (about 1233 decimal digits) are refused, so no expression can make
the calculator spend long on arithmetic or memory."""
SNIPPET_CHARS = 1500
"""How much of each passage ``kb_search`` returns."""


@tool
def current_time(
    timezone: Annotated[
        str, Field(description="An IANA time zone name, e.g. 'Europe/Berlin' or 'UTC'.")
    ] = "UTC",
) -> dict[str, str]:
    """The current date and time in a time zone (ISO 8601, with the weekday)."""
    zone: tzinfo
    if timezone.strip().upper() in ("UTC", "Z", "GMT"):
        zone = UTC
    else:
        try:
            zone = ZoneInfo(timezone.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {timezone!r}; use an IANA name such as 'Europe/Berlin'"
            ) from None
    now = datetime.now(zone)
    return {
        "time": now.isoformat(timespec="seconds"),
        "timezone": timezone.strip(),
        "weekday": now.strftime("%A"),
    }


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_SYMBOLS: dict[type[ast.AST], str] = {
    ast.BitXor: "^ (use ** for powers)",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Not: "not",
}


@tool
def calculator(
    expression: Annotated[
        str,
        Field(description="Arithmetic with numbers, + - * / // % **, parentheses, e.g. '(2+3)*4'"),
    ],
) -> int | float:
    """Evaluate an arithmetic expression exactly (use it instead of computing in your head)."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    try:
        value = _evaluate(tree.body)
    except OverflowError:
        raise ValueError("the result is too large") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("the result is too large")
    return value


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"only numbers are allowed, not {value!r}")
        return _checked(value)
    if isinstance(node, ast.UnaryOp):
        unary = _UNARY.get(type(node.op))
        if unary is None:
            raise ValueError(f"the operator {_symbol(node.op)} is not supported")
        return _checked(unary(_evaluate(node.operand)))
    if isinstance(node, ast.BinOp):
        binary = _BINARY.get(type(node.op))
        if binary is None:
            raise ValueError(f"the operator {_symbol(node.op)} is not supported")
        left = _evaluate(node.left)
        right = _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(binary(left, right))
    raise ValueError(f"{_describe(node)} is not allowed; only numbers and + - * / // % ** ( )")


def _check_power(base: int | float, exponent: int | float) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"exponents are limited to ±{MAX_EXPONENT}")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if abs(base) > 1 and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
            raise ValueError("the result is too large")


def _checked(value: Any) -> int | float:
    if isinstance(value, complex):
        raise ValueError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError("the result is too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("the result is too large")
    result: int | float = value
    return result


def _symbol(op: ast.AST) -> str:
    return _SYMBOLS.get(type(op), type(op).__name__)


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Attribute):
        return "attribute access"
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Compare):
        return "a comparison"
    return f"{type(node).__name__}"


def builtin_registry() -> ToolRegistry:
    """A registry holding ``current_time`` and ``calculator``."""
    return ToolRegistry([current_time, calculator])


# -- knowledge-base search ---------------------------------------------------------------------


class Passage(Protocol):
    """What a retriever returns (``tokenwire.retrieval``'s passages have this shape)."""

    @property
    def id(self) -> str: ...
    @property
    def document_id(self) -> str: ...
    @property
    def title(self) -> str | None: ...
    @property
    def url(self) -> str | None: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...


class Retriever(Protocol):
    async def search(self, query: str, *, limit: int) -> Sequence[Passage]: ...


def kb_search_tool(
    retriever: Retriever,
    *,
    name: str = "kb_search",
    limit: int = 4,
    description: str | None = None,
    timeout_s: float | None = None,
) -> ToolDefinition:
    """A tool searching ``retriever`` for the ``limit`` best passages. It returns
    ``{"results": [{"id", "title", "url", "snippet"}, ...]}`` (``snippet``: the passage text,
    up to 1500 characters), which the runner reports as the call's sources."""
    if limit < 1:
        raise ValueError("limit must be at least 1")

    async def kb_search(
        query: Annotated[
            str,
            Field(
                min_length=1,
                description="What to look up: a short question or keywords.",
            ),
        ],
    ) -> dict[str, list[dict[str, Any]]]:
        """Search the knowledge base for passages about a query. Returns the best matches
        with their title, URL and text; cite the URLs of the ones you use."""
        passages = await retriever.search(query, limit=limit)
        return {
            "results": [
                {
                    "id": passage.id,
                    "title": passage.title,
                    "url": passage.url,
                    "snippet": _snip(passage.text),
                }
                for passage in passages[:limit]
            ]
        }

    return ToolDefinition.from_function(
        kb_search, name=name, description=description, timeout_s=timeout_s
    )


def _snip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"
