"""StreamCursor, sans-I/O: bytes split anywhere in, each event once and in order out."""

from __future__ import annotations

import orjson
import pytest

from tokenwire import Done, Reason, Start, TextDelta
from tokenwire.client import ServerProtocolError, StreamCursor
from tokenwire.protocol import Event, encode_sse_comment, encode_sse_event

SID = "tw_1"


def stream(text: str = "hello\n\ndata: x") -> list[Event]:
    events: list[Event] = [Start(stream_id=SID, seq=1, model="m", route="r", created_at=1.0)]
    events += [TextDelta(stream_id=SID, seq=2 + i, delta=c) for i, c in enumerate(text)]
    events.append(
        Done(
            stream_id=SID,
            seq=len(events) + 1,
            answer=text,
            status="completed",
            partial=False,
            reason=Reason.STOP,
            model="m",
            route="r",
            attempts=1,
        )
    )
    return events


def sse(events: list[Event]) -> bytes:
    return encode_sse_comment("keep-alive").join(encode_sse_event(e) for e in events)


def test_bytes_split_anywhere_give_the_same_events() -> None:
    events = stream()
    body = sse(events)
    for size in (1, 2, 7, 64, len(body)):
        cursor = StreamCursor()
        out: list[Event] = []
        for i in range(0, len(body), size):
            out += cursor.feed_sse(body[i : i + size])
        assert out == events
        assert cursor.finished and cursor.terminal == events[-1]
        assert (cursor.stream_id, cursor.last_seq) == (SID, len(events))


def test_a_replay_after_a_cut_frame_drops_repeats_and_keeps_order() -> None:
    events = stream()
    body = sse(events)
    cursor = StreamCursor()
    first = cursor.feed_sse(body[: len(body) // 2])  # the connection dies mid-frame
    cursor.new_connection()
    replayed = sse(events[len(first) - 2 :])  # a server replaying a little too much
    assert first + cursor.feed_sse(replayed) == events


def test_a_gap_another_stream_or_an_event_after_the_end_is_a_protocol_error() -> None:
    events = stream("ab")
    cursor = StreamCursor()
    cursor.feed_sse(sse(events[:1]))
    with pytest.raises(ServerProtocolError, match="gap"):
        cursor.feed_sse(sse(events[2:3]))
    with pytest.raises(ServerProtocolError, match="stream"):
        StreamCursor("tw_other").feed_sse(sse(events[:1]))
    done = StreamCursor()
    done.feed_sse(sse(events))
    late = orjson.loads(orjson.dumps(events[1])) | {"seq": len(events) + 1}
    with pytest.raises(ServerProtocolError, match="terminal"):
        done.feed_json(late)


def test_an_unknown_event_type_is_skipped_but_counted() -> None:
    cursor = StreamCursor()
    cursor.feed_sse(sse(stream()[:1]))
    assert cursor.feed_json({"type": "future.thing", "stream_id": SID, "seq": 2}) is None
    delta = cursor.feed_json({"type": "text.delta", "stream_id": SID, "seq": 3, "delta": "x"})
    assert isinstance(delta, TextDelta) and cursor.last_seq == 3


@pytest.mark.parametrize(
    "frame",
    [b"data: {not json\n\n", b"data: [1]\n\n", b'data: {"type": "start"}\n\n'],
)
def test_malformed_events_are_protocol_errors(frame: bytes) -> None:
    with pytest.raises(ServerProtocolError):
        StreamCursor().feed_sse(frame)
