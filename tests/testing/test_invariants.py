"""Each invariant of ``assert_turn_invariants`` fails on the stream that breaks it."""

from __future__ import annotations

from typing import Any

import pytest

from tokenwire.protocol import (
    Done,
    Error,
    Event,
    Reason,
    Start,
    StructuredDone,
    StructuredPartial,
    TextDelta,
    TextDone,
)
from tokenwire.testing import TurnInvariantError, assert_turn_invariants

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def stream(*drafts: Any, stream_id: str = "s") -> list[Event]:
    """Number the drafts 1, 2, 3, … as the lifecycle would."""
    return [
        type(d)(**{**_fields(d), "stream_id": stream_id, "seq": i}) for i, d in enumerate(drafts, 1)
    ]


def _fields(event: Any) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.init}


START = Start(conversation_id=None, model="m", route="r", created_at=0)


def done(**changes: Any) -> Done:
    base: dict[str, Any] = dict(
        answer="ab",
        status="completed",
        partial=False,
        reason=Reason.STOP,
        model="m",
        route="r",
        attempts=1,
    )
    return Done(**{**base, **changes})


def test_a_good_stream_passes_and_returns_its_terminal() -> None:
    events = stream(
        START,
        TextDelta(delta="a"),
        TextDelta(delta="b"),
        TextDone(text="ab"),
        StructuredDone(data={"n": 1}),
        done(),
    )
    assert assert_turn_invariants(events, schema=SCHEMA, strategy="inline") is events[-1]


@pytest.mark.parametrize(
    ("events", "kwargs", "match"),
    [
        (stream(TextDelta(delta="a"), done()), {}, "first event"),
        (stream(START, TextDelta(delta="a"), TextDone(text="ab"), done()), {}, "differs"),
        (
            stream(START, TextDelta(delta="a"), Error(code="x", message="m", retryable=False)),
            {},
            "after visible text",
        ),
        (stream(START, done(partial=True)), {}, "completed"),
        (stream(START, done(), done()), {}, "2 terminal"),
        (stream(START, StructuredDone(data={"n": "x"}), done()), {"schema": SCHEMA}, "validate"),
        (
            stream(START, StructuredPartial(data={}), TextDelta(delta="a"), done()),
            {"strategy": "inline"},
            "before any text",
        ),
        ([], {}, "no events"),
        (
            stream(START, TextDelta(delta="a"))
            + stream(done(), stream_id="t")[:0]
            + [done(stream_id="t", seq=3)],
            {},
            "several streams",
        ),
    ],
)
def test_each_broken_invariant_is_named(
    events: list[Event], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(TurnInvariantError, match=match):
        assert_turn_invariants(events, **kwargs)
