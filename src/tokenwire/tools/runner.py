"""Running the calls a model made: each becomes a :class:`ToolOutcome`, never an exception.

Whatever goes wrong with a call (unknown tool, arguments that are not JSON or do not match the
schema, the tool raising, the tool taking too long) is an outcome with ``ok=False`` and an
error message written for the model to read, so it can correct itself or answer without the
tool. Only the cancellation of the turn itself propagates.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from ..providers import Message, SourceChunk, ToolCallRequest
from .registry import ToolDefinition, ToolRegistry

logger = logging.getLogger("tokenwire.tools")

MAX_CONTENT_CHARS = 16_000
"""Default cap on the text sent back to the model for one call."""
SUMMARY_CHARS = 200
SNIPPET_CHARS = 500
"""Cap on a source's snippet (the model gets the full text in ``content``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOutcome:
    """The result of one call, in the forms its consumers need."""

    call_id: str
    name: str
    ok: bool
    result: Any
    """The JSON-ready value the tool returned (``None`` when not ok)."""
    content: str
    """The text sent back to the model: JSON of ``result``, or of ``{"error": ...}``; capped,
    with a truncation marker, at the runner's ``max_chars``."""
    summary: str
    """One line (at most 200 characters) for the ``tool.result`` event."""
    error: str | None = None
    sources: tuple[SourceChunk, ...] = ()
    """Sources found in the result (``origin`` is ``tool:<name>``)."""
    elapsed_s: float = 0.0
    timed_out: bool = False

    @property
    def usable(self) -> bool:
        """Ok, and the result has something in it: not ``None``, a blank string, an empty list
        or dict, nor a dict whose every value is one of those (``{"results": []}``)."""
        if not self.ok or _empty(self.result):
            return False
        if isinstance(self.result, dict):
            return not all(_empty(value) for value in self.result.values())
        return True

    def to_message(self) -> Message:
        """The ``tool`` message that carries this outcome back to the model."""
        return Message(role="tool", content=self.content, tool_call_id=self.call_id, name=self.name)


async def run_tool(
    registry: ToolRegistry,
    call: ToolCallRequest,
    *,
    timeout_s: float,
    max_chars: int = MAX_CONTENT_CHARS,
) -> ToolOutcome:
    """Run one call: look the tool up, parse and validate the arguments, call it.

    The time limit is the tool's own ``timeout_s`` if it has one, else ``timeout_s``. An async
    tool runs on the event loop and is cancelled when the limit passes. A sync tool runs in a
    worker thread (``asyncio.to_thread``) under the same limit, but a thread cannot be killed:
    when a sync tool hangs, the outcome says it timed out and the thread is abandoned, still
    running (and holding a slot of the default executor) until the function returns by itself.
    Give blocking tools their own timeouts (HTTP clients, subprocesses) for that reason.

    An exception raised by the tool becomes ``ok=False`` with ``error`` set to
    ``"<ExceptionType>: <message>"`` (the traceback goes to the log only). Cancelling the task
    running this (the turn was cancelled) raises ``CancelledError`` as usual.
    """
    if max_chars <= 0:
        raise ValueError("max_chars must be > 0")
    started = time.monotonic()

    def failed(error: str, *, timed_out: bool = False) -> ToolOutcome:
        return ToolOutcome(
            call_id=call.call_id,
            name=call.name,
            ok=False,
            result=None,
            content=_cap(json.dumps({"error": error}, ensure_ascii=False), max_chars),
            summary=_line(f"error: {error}"),
            error=error,
            elapsed_s=time.monotonic() - started,
            timed_out=timed_out,
        )

    if call.name not in registry:
        known = ", ".join(registry.names) or "none"
        logger.info("tool call %s: unknown tool %r", call.call_id, call.name)
        return failed(f"unknown tool {call.name!r}; available tools: {known}")
    definition = registry.get(call.name)

    parsed = _parse_arguments(call.arguments)
    if isinstance(parsed, str):
        logger.info("tool call %s (%s) rejected: %s", call.call_id, call.name, parsed)
        return failed(parsed)
    try:
        kwargs = definition.validate_arguments(parsed)
    except ValidationError as exc:
        error = "invalid arguments: " + _validation_message(exc)
        logger.info("tool call %s (%s) rejected: %s", call.call_id, call.name, error)
        return failed(error)

    limit = definition.timeout_s or timeout_s
    try:
        value = await _call(definition, kwargs, limit)
    except TimeoutError:
        logger.warning(
            "tool %s (call %s) did not finish within %g s", call.name, call.call_id, limit
        )
        return failed(f"the tool did not finish within {limit:g} s", timed_out=True)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the turn was cancelled
        logger.warning("tool %s (call %s) was cancelled from within", call.name, call.call_id)
        return failed("CancelledError: the tool's work was cancelled")
    except Exception as exc:
        error = _exception_line(exc)
        logger.warning(
            "tool %s (call %s) failed: %s", call.name, call.call_id, error, exc_info=True
        )
        return failed(error)

    try:
        result = to_jsonable_python(value)
        text = json.dumps(result, ensure_ascii=False, allow_nan=False)
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        error = f"TypeError: the tool returned a value that is not JSON-serializable ({exc})"
        logger.warning("tool %s (call %s): %s", call.name, call.call_id, error)
        return failed(error)
    return ToolOutcome(
        call_id=call.call_id,
        name=call.name,
        ok=True,
        result=result,
        content=_cap(text, max_chars),
        summary=summarize(result),
        sources=extract_sources(result, origin=f"tool:{call.name}"),
        elapsed_s=time.monotonic() - started,
    )


async def run_tools(
    registry: ToolRegistry,
    calls: Iterable[ToolCallRequest],
    *,
    timeout_s: float,
    max_chars: int = MAX_CONTENT_CHARS,
) -> list[ToolOutcome]:
    """Run several calls concurrently; the outcomes are in the order of ``calls``.
    Cancelling this cancels every call still running."""
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(run_tool(registry, call, timeout_s=timeout_s, max_chars=max_chars))
            for call in calls
        ]
    return [task.result() for task in tasks]


async def _call(definition: ToolDefinition, kwargs: dict[str, Any], limit: float) -> Any:
    """Raises ``TimeoutError`` only when *our* limit passed; a ``TimeoutError`` the tool raised
    itself is reported as the tool's own error."""
    deadline = asyncio.timeout(limit)
    try:
        async with deadline:
            if definition.is_async:
                value = await definition.function(**kwargs)
            else:
                value = await asyncio.to_thread(definition.function, **kwargs)
            if inspect.isawaitable(value):  # a sync wrapper around an async function
                value = await value
            return value
    except TimeoutError as exc:
        if deadline.expired():
            raise
        raise _ToolRaised(exc) from exc


class _ToolRaised(Exception):
    """Carries an exception (a ``TimeoutError``) the tool raised itself past our handler."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _parse_arguments(text: str) -> dict[str, Any] | str:
    """The arguments object, or the error message for the model."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return f"arguments must be a JSON object, not {_json_type(value)}"
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


def _validation_message(exc: ValidationError) -> str:
    """``where: what`` for each error, e.g. ``limit: Input should be a valid integer``."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(arguments)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _exception_line(exc: BaseException) -> str:
    if isinstance(exc, _ToolRaised):
        exc = exc.original
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _cap(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    marker = f"\n[truncated: showing the first {{}} of {len(text)} characters]"
    keep = max(0, max_chars - len(marker.format(max_chars)))
    return text[:keep] + marker.format(keep)


def _line(text: str, limit: int = SUMMARY_CHARS) -> str:
    """The first non-blank line, collapsed and capped (with an ellipsis)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    first = " ".join(first.split())
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, list | dict | tuple) and not value


def _count(n: int, noun: str) -> str:
    if n == 0:
        return f"no {noun}"
    singular = noun[:-1] if noun.endswith("s") and n == 1 else noun
    return f"{n} {singular}"


def summarize(result: Any) -> str:
    """One line describing a (JSON-ready) result: ``3 results`` for a list, the first line of
    a string, ``4 items`` for a dict holding one list under ``items``, else compact JSON."""
    if result is None:
        return "no result"
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, str):
        return _line(result) or "empty result"
    if isinstance(result, list):
        return _count(len(result), "results")
    if isinstance(result, dict):
        if not result:
            return "empty result"
        lists = [(key, value) for key, value in result.items() if isinstance(value, list)]
        if len(lists) == 1 and (len(result) == 1 or lists[0][0] in ("results", "items")):
            key, value = lists[0]
            return _count(len(value), key if key.endswith("s") else "results")
        return _line(json.dumps(result, ensure_ascii=False, separators=(", ", ": ")))
    return _line(json.dumps(result, ensure_ascii=False))


def extract_sources(result: Any, *, origin: str) -> tuple[SourceChunk, ...]:
    """Sources in a (JSON-ready) result. Recognised shapes:

    - a dict with a ``sources`` list (URL strings, or objects with ``url``/``id``/``title``/
      ``snippet``) or a ``results`` list of such objects;
    - a dict that is itself a source: it has ``url`` (plus ``title``, ``snippet`` or ``text``);
    - a list of such dicts.
    """
    found: list[SourceChunk] = []
    if isinstance(result, list):
        for item in result:
            if isinstance(item, Mapping):
                _add_source(found, item, origin, needs_url=False)
    elif isinstance(result, Mapping):
        listed = False
        for key in ("sources", "results"):
            items = result.get(key)
            if isinstance(items, list):
                listed = True
                for item in items:
                    if isinstance(item, str) and key == "sources" and item.strip():
                        found.append(SourceChunk(url=item.strip(), origin=origin))
                    elif isinstance(item, Mapping):
                        _add_source(found, item, origin, needs_url=False)
        if not listed:
            _add_source(found, result, origin, needs_url=True)
    return tuple(found)


def _add_source(
    found: list[SourceChunk], item: Mapping[str, Any], origin: str, *, needs_url: bool
) -> None:
    url = _text(item.get("url"))
    raw_id = item.get("id")
    source_id = (
        str(raw_id) if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    )
    if not url and (needs_url or not source_id):
        return
    snippet = _text(item.get("snippet")) or _text(item.get("text"))
    if snippet and len(snippet) > SNIPPET_CHARS:
        snippet = snippet[: SNIPPET_CHARS - 1] + "…"
    found.append(
        SourceChunk(
            url=url,
            id=source_id or None,
            title=_text(item.get("title")),
            snippet=snippet,
            origin=origin,
        )
    )


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None
