from __future__ import annotations

import orjson
import pytest

from tokenwire.protocol import (
    EVENT_TYPES,
    Done,
    Reason,
    TextDelta,
    Usage,
    decode_event,
    encode_event,
    encode_event_with,
    event_to_dict,
)
from tokenwire.protocol.errors import RemoteProtocolError


def test_type_comes_first_and_json_has_no_raw_newline() -> None:
    raw = encode_event(TextDelta(delta="a\nb\r", stream_id="s", seq=3))
    assert raw.startswith(b'{"type":"text.delta"')
    assert b"\n" not in raw and b"\r" not in raw


def test_done_round_trips_with_its_enums() -> None:
    done = Done(
        stream_id="s",
        seq=9,
        answer="hi",
        status="incomplete",
        partial=True,
        reason=Reason.TIMEOUT_IDLE,
        model="m",
        route="r",
        attempts=2,
        usage={"input_tokens": 1},
        timings={"total": 1.5},
    )
    back = decode_event(encode_event(done))
    assert back == done
    assert isinstance(back, Done) and back.reason is Reason.TIMEOUT_IDLE


def test_every_event_type_is_registered_under_its_tag() -> None:
    for tag, cls in EVENT_TYPES.items():
        assert cls.__dataclass_fields__["type"].default == tag


def test_unknown_fields_are_ignored_unknown_types_are_errors() -> None:
    event = decode_event(
        {
            "type": "usage",
            "stream_id": "s",
            "seq": 1,
            "input_tokens": 1,
            "output_tokens": 2,
            "from_the_future": True,
        }
    )
    assert event == Usage(stream_id="s", seq=1, input_tokens=1, output_tokens=2)
    with pytest.raises(RemoteProtocolError):
        decode_event({"type": "nope"})
    with pytest.raises(RemoteProtocolError):
        decode_event(b"{not json")
    with pytest.raises(RemoteProtocolError):
        decode_event({"type": "text.delta", "stream_id": "s", "seq": 1})


def test_encode_with_extra_fields_puts_them_first() -> None:
    raw = encode_event_with(TextDelta(delta="x", stream_id="s", seq=1), request_id="r1")
    assert raw.startswith(b'{"request_id":"r1","type":"text.delta"')
    assert orjson.loads(raw)["delta"] == "x"
    assert event_to_dict(TextDelta(delta="x"))["delta"] == "x"


def test_a_structured_reset_round_trips() -> None:
    from tokenwire.protocol import StructuredReset

    reset = StructuredReset(attempt=2, code="schema_invalid", stream_id="s", seq=2)
    wire = encode_event(reset)
    assert wire.startswith(b'{"type":"structured.reset"')
    assert decode_event(wire) == reset
    assert event_to_dict(reset) == {
        "type": "structured.reset",
        "stream_id": "s",
        "seq": 2,
        "attempt": 2,
        "code": "schema_invalid",
    }
