"""The turn state machine. Everything that affects a turn's lifecycle lives in this module.

::

    IDLE ──start──▶ ACCEPTED ──text.delta | tool.call | tool.result──▶ STREAMING
                       │  ▲ status, usage,                          │  ▲ status, usage,
                       │  └ structured.*                            │  └ content, structured.*
                       │                                            │
                       ├──text.done──▶ TEXT_DONE ◀──text.done───────┘
                       │                  │ status, usage, structured.*
                       ├──done | error──▶ CLOSED ◀──done──┘ (and STREAMING ──done──▶ CLOSED)

``structured.*`` events belong to the system channel: they may arrive in any open state (the
``parallel`` strategy can finish its data before the text starts) and never count as visible
output, so they neither move the state nor prevent a retry of the text call.

``error`` is only possible from ACCEPTED: once anything visible was delivered (STREAMING) or the
text was declared finished (TEXT_DONE), a turn can only end with ``done`` (partial when it was
cut short). Nothing is accepted after CLOSED. The machine stamps ``stream_id`` and ``seq`` (1, 2,
3, ... with no gaps) on every event it accepts; a forbidden event raises
:class:`LocalProtocolError` and changes nothing, so a bug cannot corrupt a stream.
"""

from __future__ import annotations

import dataclasses
from enum import Enum

from .errors import LocalProtocolError
from .events import EVENT_TYPES, Event, TextDelta, TextDone


class TurnState(Enum):
    IDLE = "idle"
    ACCEPTED = "accepted"
    STREAMING = "streaming"
    TEXT_DONE = "text_done"
    CLOSED = "closed"


_S = TurnState
_CONTENT = {
    "text.delta": _S.STREAMING,
    "tool.call": _S.STREAMING,
    "tool.result": _S.STREAMING,
}
"""Visible output: once any of these reached the stream, the turn cannot be retried."""

_STRUCTURED = ("structured.partial", "structured.reset", "structured.done", "structured.error")
"""The system channel's events. Allowed until the terminal event; they never make a turn
"visible" (a retry of the text call cannot duplicate them), so they never change the state."""


def _with_structured(state: TurnState, table: dict[str, TurnState]) -> dict[str, TurnState]:
    return {**table, **dict.fromkeys(_STRUCTURED, state)}


# The one table: (state, event type) → next state. Anything not listed is forbidden.
_TRANSITIONS: dict[TurnState, dict[str, TurnState]] = {
    _S.IDLE: {"start": _S.ACCEPTED},
    _S.ACCEPTED: _with_structured(
        _S.ACCEPTED,
        {
            "status": _S.ACCEPTED,
            "usage": _S.ACCEPTED,
            **_CONTENT,
            "text.done": _S.TEXT_DONE,
            "done": _S.CLOSED,
            "error": _S.CLOSED,
        },
    ),
    _S.STREAMING: _with_structured(
        _S.STREAMING,
        {
            "status": _S.STREAMING,
            "usage": _S.STREAMING,
            **_CONTENT,
            "text.done": _S.TEXT_DONE,
            "done": _S.CLOSED,
        },
    ),
    _S.TEXT_DONE: _with_structured(
        _S.TEXT_DONE,
        {"status": _S.TEXT_DONE, "usage": _S.TEXT_DONE, "done": _S.CLOSED},
    ),
    _S.CLOSED: {},
}


_PAYLOAD_FIELDS: dict[type[Event], tuple[str, ...]] = {
    cls: tuple(
        f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("stream_id", "seq")
    )
    for cls in EVENT_TYPES.values()
}


class TurnLifecycle:
    """Guards one stream's event sequence and numbers its events.

    Call :meth:`send` with a draft event; it returns the stamped event to publish, or raises
    :class:`LocalProtocolError` if the turn's state forbids it.
    """

    __slots__ = ("_deltas", "_seq", "_state", "_visible", "stream_id")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self._state = TurnState.IDLE
        self._seq = 0
        self._deltas: list[str] = []
        self._visible = False

    @property
    def state(self) -> TurnState:
        return self._state

    @property
    def seq(self) -> int:
        """The ``seq`` of the last event accepted (0 before ``start``)."""
        return self._seq

    @property
    def visible(self) -> bool:
        """True once content reached the stream: from then on the turn cannot be retried."""
        return self._visible

    @property
    def closed(self) -> bool:
        """True once the terminal event was accepted."""
        return self._state is TurnState.CLOSED

    @property
    def streamed_text(self) -> str:
        """The concatenation of every ``text.delta`` accepted so far."""
        if len(self._deltas) > 1:
            self._deltas = ["".join(self._deltas)]
        return self._deltas[0] if self._deltas else ""

    def can_send(self, event_type: str) -> bool:
        return event_type in _TRANSITIONS[self._state]

    def text_delta(self, text: str) -> TextDelta:
        """``send(TextDelta(delta=text))`` without the draft: the per-token path builds one
        event instead of two. Same rules, same table."""
        next_state = _TRANSITIONS[self._state].get("text.delta")
        if next_state is None or not text:
            self.send(TextDelta(delta=text))  # raises, with the full explanation
            raise AssertionError("unreachable")
        self._deltas.append(text)
        self._visible = True
        self._seq += 1
        self._state = next_state
        return TextDelta(delta=text, stream_id=self.stream_id, seq=self._seq)

    def send(self, draft: Event) -> Event:
        """Accept a draft event: check the transition, stamp ``stream_id`` and the next ``seq``."""
        next_state = _TRANSITIONS[self._state].get(draft.type)
        if next_state is None:
            raise LocalProtocolError(
                f"stream {self.stream_id}: {draft.type!r} is not allowed in state "
                f"{self._state.value}"
            )
        if draft.stream_id and draft.stream_id != self.stream_id:
            raise LocalProtocolError(f"event for stream {draft.stream_id} sent to {self.stream_id}")
        if isinstance(draft, TextDelta):
            if not draft.delta:
                raise LocalProtocolError("an empty text.delta carries nothing")
            self._deltas.append(draft.delta)
        elif isinstance(draft, TextDone) and draft.text != self.streamed_text:
            raise LocalProtocolError("text.done must carry exactly the text the deltas carried")
        if draft.type in _CONTENT:
            self._visible = True
        self._seq += 1
        self._state = next_state
        # A new event (drafts may be reused), built directly: dataclasses.replace costs twice
        # as much, and this runs for every token.
        cls = type(draft)
        names = _PAYLOAD_FIELDS[cls]
        return cls(stream_id=self.stream_id, seq=self._seq, **{n: getattr(draft, n) for n in names})
