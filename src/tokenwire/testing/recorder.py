"""A recorder of both channels of an engine: every turn's events (text and structured) and
every record the system channel delivered, for assertions in tests.

    recorder = ChannelRecorder(engine)   # before the turns start
    ...                                  # the application runs turns
    await recorder.settled()             # every event handled, every route attempted
    turn = recorder.turns[stream_id]     # or recorder.only()
    assert turn.text == "..." and recorder.records[0]["answer"] == "..."

It listens through the engine's hooks (isolated from the streams: a slow recorder never slows a
turn) and a route of the response router, so it sees what the application's own consumers see.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..engine import Engine
from ..protocol import (
    Done,
    Error,
    Event,
    StructuredDone,
    StructuredError,
    StructuredPartial,
    StructuredReset,
    TextDelta,
    is_terminal,
)

RECORDER_ROUTE = "tokenwire-testing-recorder"


@dataclass
class RecordedTurn:
    """What one stream carried."""

    stream_id: str
    events: list[Event] = field(default_factory=list)
    finished: bool = False
    """True once its terminal event is recorded."""

    @property
    def text(self) -> str:
        """The visible text: the deltas, concatenated."""
        return "".join(e.delta for e in self.events if isinstance(e, TextDelta))

    @property
    def structured(self) -> list[Event]:
        """The structured channel's events, in order."""
        return [
            e
            for e in self.events
            if isinstance(e, StructuredPartial | StructuredReset | StructuredDone | StructuredError)
        ]

    @property
    def terminal(self) -> Done | Error | None:
        last = self.events[-1] if self.events else None
        return last if isinstance(last, Done | Error) else None


class ChannelRecorder:
    """Records the text and structured events of every turn of ``engine`` and the records its
    system channel delivers. Create it before the turns start; :meth:`close` when done."""

    def __init__(self, engine: Engine, *, queue_size: int = 100_000) -> None:
        self.engine = engine
        self.turns: dict[str, RecordedTurn] = {}
        self.records: list[dict[str, Any]] = []
        """System-channel records (the ``done`` fields, conversation_id, metadata), in order."""
        self._changed = asyncio.Condition()
        self._subscription = engine.hooks.subscribe(self._on_event, queue_size=queue_size)
        self._route = None
        if RECORDER_ROUTE not in {r.name for r in engine.router.routes}:
            self._route = engine.router.route(RECORDER_ROUTE, None, self._on_record)

    async def _on_event(self, event: Event) -> None:
        async with self._changed:
            turn = self.turns.get(event.stream_id)
            if turn is None:
                turn = self.turns[event.stream_id] = RecordedTurn(event.stream_id)
            turn.events.append(event)
            if is_terminal(event):
                turn.finished = True
                self._changed.notify_all()

    async def _on_record(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    @property
    def errors(self) -> list[Event]:
        """Every ``error`` terminal and ``structured.error`` seen, in arrival order."""
        return [
            e
            for turn in self.turns.values()
            for e in turn.events
            if isinstance(e, Error | StructuredError)
        ]

    @property
    def dropped(self) -> int:
        """Events the recorder missed because its queue was full (0 unless overwhelmed)."""
        return self._subscription.dropped

    def only(self) -> RecordedTurn:
        """The one turn recorded (``AssertionError`` if there are none or several)."""
        assert len(self.turns) == 1, f"{len(self.turns)} turns recorded, expected 1"
        return next(iter(self.turns.values()))

    async def wait_turn(self, stream_id: str) -> RecordedTurn:
        """Wait until the turn's terminal event is recorded."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: stream_id in self.turns and self.turns[stream_id].finished
            )
        return self.turns[stream_id]

    async def settled(self) -> None:
        """Wait until every event offered so far is recorded and every route (this
        recorder's included) has been attempted for every finished turn."""
        await self._subscription.drained()
        await self.engine.routes_settled()

    def close(self) -> None:
        self._subscription.unsubscribe()
