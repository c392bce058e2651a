"""The example of docs/testing.md: testing a small app built on tokenwire with
``tokenwire.testing`` — its fixtures, the channel recorder and the turn invariants."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tokenwire import Engine
from tokenwire.protocol import SSEDecoder, decode_event
from tokenwire.testing import (
    ChannelRecorder,
    TurnInvariantError,
    assert_turn_invariants,
)

from .example_app import REVIEW, create_review_app

pytest_plugins = ["tokenwire.testing.fixtures"]


@pytest.fixture
def tokenwire_app(tokenwire_engine: Engine) -> Any:
    # The app under test, on the engine the fixtures made (the scripted provider).
    return create_review_app(tokenwire_engine)


NEGATIVE = {
    "text": "The kettle broke after two days.",
    "script": {
        "tokens": ["Sorry to ", "hear that!"],
        "extraction": {"tokens": ['{"sentiment": "negative", ', '"product": "kettle"}']},
    },
}


async def test_a_negative_review_is_answered_and_escalated(
    tokenwire_http: httpx.AsyncClient, tokenwire_recorder: ChannelRecorder, tokenwire_app: Any
) -> None:
    answer = (await tokenwire_http.post("/reviews", json=NEGATIVE)).json()
    assert answer["reply"] == "Sorry to hear that!"
    assert answer["review"]["data"] == {"sentiment": "negative", "product": "kettle"}

    await tokenwire_recorder.settled()
    turn = tokenwire_recorder.only()
    # Both channels, checked against the promises every stream keeps.
    assert_turn_invariants(turn.events, schema=REVIEW)
    assert turn.text == "Sorry to hear that!"
    assert [e.type for e in turn.structured][-1] == "structured.done"
    [record] = tokenwire_recorder.records
    assert record["stream_id"] == answer["stream_id"]
    assert tokenwire_app.state.dashboard == [{"sentiment": "negative", "product": "kettle"}]
    assert tokenwire_recorder.errors == []


async def test_the_mounted_stream_endpoint_keeps_the_invariants(
    tokenwire_http: httpx.AsyncClient, tokenwire_recorder: ChannelRecorder
) -> None:
    body = {
        "prompt": "hi",
        "script": {"tokens": ["a", "b", "c"], "fault": {"kind": "truncate", "at": 2}},
    }
    async with tokenwire_http.stream("POST", "/llm/v1/streams", json=body) as response:
        decoder = SSEDecoder()
        events = [
            decode_event(m.data)
            async for chunk in response.aiter_bytes()
            for m in decoder.feed(chunk)
        ]
    done = assert_turn_invariants(events)
    # An upstream that stopped without its end marker is honest: partial, never completed.
    assert done.type == "done" and done.partial and done.reason.value == "upstream_truncated"
    recorded = await tokenwire_recorder.wait_turn(events[0].stream_id)
    assert recorded.events == events  # the hooks saw exactly what the client saw


def test_the_invariants_catch_a_broken_stream() -> None:
    from tokenwire.protocol import Done, Reason, Start, TextDelta

    start = Start(stream_id="s", seq=1, conversation_id=None, model="m", route="r", created_at=0)
    delta = TextDelta(stream_id="s", seq=2, delta="hi")
    done = Done(
        stream_id="s",
        seq=3,
        answer="hi",
        status="completed",
        partial=False,
        reason=Reason.STOP,
        model="m",
        route="r",
        attempts=1,
    )
    assert_turn_invariants([start, delta, done])
    with pytest.raises(TurnInvariantError, match="seq"):
        assert_turn_invariants([start, done])  # a gap: seq 1, 3
    with pytest.raises(TurnInvariantError, match="no terminal"):
        assert_turn_invariants([start, delta])
    with pytest.raises(TurnInvariantError, match="after the terminal"):
        assert_turn_invariants(
            [
                start,
                done.__class__(**{**_fields(done), "seq": 2}),
                delta.__class__(stream_id="s", seq=3, delta="x"),
            ]
        )


def _fields(event: Any) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.init}
