"""The ``Idempotency-Key`` table: which turn a key started, and what a retry with it gets.

A retry with the same key is the same client asking again for the same answer. So:

- while the key's turn runs, the retry joins it **as its originator** (the first connection's
  drop, noticed after the retry arrived, does not cancel the turn the retry now reads), and
  resumes after the retry's ``Last-Event-ID``;
- a turn its originator's drop stopped (``client_gone``) is **started afresh** under the key
  when the retry holds nothing visible of it (no ``text.delta``, ``tool.call`` or
  ``tool.result`` at or below its ``Last-Event-ID``): the dropped client never saw an answer,
  and the drop had already aborted the upstream, so nothing is generated twice for the user;
- any other finished turn is replayed after the cursor (a completed answer is never generated
  twice).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..bus import EventLog, ResumeUnavailable, UnknownStream
from ..protocol import Done, Event, Reason

if TYPE_CHECKING:
    from .turn import Turn

Scope = tuple[str | None, str]
"""(tenant, key): a key is only ever looked up within its tenant."""

_VISIBLE_TYPES = frozenset({"text.delta", "tool.call", "tool.result"})
"""What a client sees of an answer (``protocol.lifecycle``'s content events)."""


@dataclass(slots=True)
class KeyedTurn:
    fingerprint: str
    """The request the key was first used with (its canonical JSON)."""
    turn: asyncio.Future[Turn]
    """The turn it started, once started (waiters of a racing retry await it)."""


class IdempotencyTable:
    """Keys → the turn each started, the oldest forgotten past ``capacity`` entries."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[Scope, KeyedTurn] = OrderedDict()

    def get(self, scope: Scope) -> KeyedTurn | None:
        return self._entries.get(scope)

    def claim(self, scope: Scope, fingerprint: str) -> KeyedTurn:
        """A new entry for the key (replacing any), whose turn the caller starts and then
        settles with :meth:`started` or :meth:`failed`."""
        entry = KeyedTurn(fingerprint, asyncio.get_running_loop().create_future())
        self._entries.pop(scope, None)
        self._entries[scope] = entry
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return entry

    def started(self, entry: KeyedTurn, turn: Turn) -> None:
        entry.turn.set_result(turn)

    def failed(self, scope: Scope, entry: KeyedTurn, exc: BaseException) -> None:
        """A start that failed does not keep the key: the client may try again."""
        if self._entries.get(scope) is entry:
            del self._entries[scope]
        if isinstance(exc, Exception):
            entry.turn.set_exception(exc)
            entry.turn.exception()  # retrieved here: waiters, if any, get it too
        else:
            entry.turn.cancel()


def restarts(turn: Turn, log: EventLog, seen_seq: int) -> bool:
    """True when a retry holding events through ``seen_seq`` should get a fresh turn: the
    key's turn was stopped because its originator left, and the retry saw nothing visible."""
    if turn.stop_reason is not Reason.CLIENT_GONE:
        return False
    if turn.terminal is not None and not (
        isinstance(turn.terminal, Done) and turn.terminal.reason is Reason.CLIENT_GONE
    ):
        return False  # the stop came too late: the turn had ended on its own
    if seen_seq <= 0:
        return True
    try:
        seen = log.follower(turn.stream_id, 0).take()
    except (ResumeUnavailable, UnknownStream):
        return False  # what it saw is no longer known: resume (which says so) rather than guess
    return not holds_visible(seen, seen_seq)


def holds_visible(events: Iterable[Event], seen_seq: int) -> bool:
    """True when the events through ``seen_seq`` show something of an answer (a client holding
    them must not be given another one). The scale-out gateway applies the same rule."""
    return any(e.type in _VISIBLE_TYPES for e in events if e.seq <= seen_seq)
