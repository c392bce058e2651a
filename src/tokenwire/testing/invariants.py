"""The turn invariants, as assertions for tests of applications built on tokenwire.

Every stream, whatever happened to it, must satisfy these; a test of an application can check
them on the events it received (over SSE, WebSocket, the Python client or ``engine.run``)::

    done = assert_turn_invariants(events, schema=MY_SCHEMA, strategy="inline")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from ..protocol import (
    Done,
    Error,
    Event,
    StructuredDone,
    StructuredError,
    StructuredPartial,
    StructuredReset,
    TextDelta,
    TextDone,
    is_terminal,
)

_STRUCTURED = (StructuredPartial, StructuredReset, StructuredDone, StructuredError)


class TurnInvariantError(AssertionError):
    """A stream broke one of the turn invariants; the message says which and where."""


def assert_turn_invariants(
    events: Sequence[Event],
    *,
    schema: Mapping[str, Any] | None = None,
    strategy: str | None = None,
) -> Done | Error:
    """Check one stream's events and return its terminal event.

    - the first event is ``start`` and every event carries the same ``stream_id``;
    - ``seq`` runs 1, 2, 3, … with no gap and no repeat;
    - exactly one terminal event (``done`` or ``error``), and it is the last;
    - ``error`` only when nothing visible was sent before it;
    - the text deltas, concatenated, equal ``text.done`` (when there is one);
    - a ``done`` whose status is ``completed`` is not partial and has reason ``stop``;
    - with ``schema``: every ``structured.done`` marked valid validates against it;
    - with ``strategy="inline"``: no structured event arrives before the first text delta.

    Raises :class:`TurnInvariantError`.
    """
    if not events:
        _fail("no events at all: a stream always has at least start and a terminal event")
    if events[0].type != "start":
        _fail(f"the first event is {events[0].type!r}, not 'start'")
    stream_ids = {e.stream_id for e in events}
    if len(stream_ids) != 1:
        _fail(f"events of several streams mixed together: {sorted(stream_ids)}")
    seqs = [e.seq for e in events]
    if seqs != list(range(1, len(events) + 1)):
        _fail(f"seq is not 1..{len(events)} without gaps or repeats: {_first_break(seqs)}")
    terminals = [i for i, e in enumerate(events) if is_terminal(e)]
    if not terminals:
        _fail("no terminal event: the stream ended silently")
    if len(terminals) > 1:
        _fail(f"{len(terminals)} terminal events (at seq {[seqs[i] for i in terminals]})")
    if terminals[0] != len(events) - 1:
        _fail(f"events after the terminal event (seq {seqs[terminals[0]]})")
    terminal = events[-1]
    assert isinstance(terminal, Done | Error)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    if isinstance(terminal, Error) and deltas:
        _fail("an `error` terminal after visible text (it must be `done`, partial)")
    text = "".join(d.delta for d in deltas)
    for done_text in (e for e in events if isinstance(e, TextDone)):
        if done_text.text != text:
            _fail(
                f"text.done ({len(done_text.text)} chars) differs from the concatenated "
                f"deltas ({len(text)} chars)"
            )
    if isinstance(terminal, Done) and terminal.status == "completed":
        if terminal.partial or terminal.reason.value != "stop":
            _fail(f"`completed` with partial={terminal.partial}, reason={terminal.reason.value}")
    if schema is not None:
        validator = jsonschema.Draft202012Validator(dict(schema))
        for event in events:
            if isinstance(event, StructuredDone) and event.valid:
                errors = [e.message for e in validator.iter_errors(event.data)]
                if errors:
                    _fail(f"structured.done (seq {event.seq}) does not validate: {errors[:3]}")
    if strategy == "inline":
        first_text = next((e.seq for e in deltas), None)
        for event in events:
            if isinstance(event, _STRUCTURED) and (first_text is None or event.seq < first_text):
                _fail(f"{event.type} (seq {event.seq}) arrived before any text (inline)")
    return terminal


def _fail(message: str) -> None:
    raise TurnInvariantError(message)


def _first_break(seqs: list[int]) -> str:
    for index, seq in enumerate(seqs, start=1):
        if seq != index:
            return f"position {index} has seq {seq}"
    return "too many events"
