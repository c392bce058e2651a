"""Ending a stream whose turn cannot run to its end: the worker running it was lost, or Redis
lost the turn. Whoever ends it (a worker taking the turn over, a gateway finding it gone) holds
its fencing token, so there is still exactly one terminal event, and it tells what happened."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..engine.postprocess import canonical_answer
from ..protocol import Done, Error, Event, Reason, Start, TextDone, TurnLifecycle
from .writer import RedisLogWriter

_QUIET = ("start", "status")
"""Events that show nothing to a user: a turn with only these may run again."""


def shown(events: Sequence[Event]) -> bool:
    """Whether a stream already showed its reader something (then it cannot run again)."""
    return any(e.type not in _QUIET for e in events)


def replayed(stream_id: str, events: Sequence[Event]) -> TurnLifecycle:
    """The state machine of a stream after ``events`` (its next event gets the next seq)."""
    lifecycle = TurnLifecycle(stream_id)
    for event in events:
        lifecycle.send(event)
    return lifecycle


def lost_terminal(
    stream_id: str, prior: Sequence[Event], reason: Reason, message: str
) -> Done | Error:
    """The honest end of a stream cut off after ``prior``: ``done`` partial with the text
    streamed so far when something was shown, else ``error`` (nothing was delivered)."""
    lifecycle = replayed(stream_id, prior)
    if not lifecycle.visible:
        return Error(code=reason.value, message=message, retryable=True, attempts=1)
    start = next((e for e in prior if isinstance(e, Start)), None)
    return Done(
        answer=canonical_answer(lifecycle.streamed_text),
        status="incomplete",
        partial=True,
        reason=reason,
        model=start.model if start is not None else None,
        route=start.route if start is not None else "",
        attempts=1,
    )


def end_stream(
    writer: RedisLogWriter,
    stream_id: str,
    prior: Sequence[Event],
    terminal: Done | Error,
    *,
    rewrite: bool = False,
) -> Event | None:
    """Append to a claimed stream what closes it after ``prior``: ``start`` if it had none,
    ``text.done`` if its text was still open, then ``terminal``. ``rewrite``: Redis lost
    ``prior`` too; write it again first. None if the stream's state does not allow that
    terminal (it never does for a stream that is already closed)."""
    lifecycle = replayed(stream_id, prior)
    writer.open(stream_id)
    if rewrite:
        for event in prior:
            writer.append(stream_id, event)
    if not prior:
        start = Start(conversation_id=None, model="", route="", created_at=time.time())
        writer.append(stream_id, lifecycle.send(start))
    if lifecycle.can_send("text.done") and lifecycle.visible:
        writer.append(stream_id, lifecycle.send(TextDone(text=lifecycle.streamed_text)))
    if not lifecycle.can_send(terminal.type):
        return None
    event = lifecycle.send(terminal)
    writer.append(stream_id, event)
    return event
