from __future__ import annotations

import orjson
import pytest

from tokenwire.protocol.ws import (
    CLOSE_INVALID_PAYLOAD,
    Cancel,
    FrameError,
    Generate,
    MessageError,
    Resume,
    encode_request_error,
    parse_client_message,
)


def test_generate_carries_the_request_body() -> None:
    msg = parse_client_message('{"type":"generate","request_id":"r1","prompt":"hi"}')
    assert msg == Generate("r1", {"prompt": "hi"})


def test_cancel_and_resume() -> None:
    assert parse_client_message(b'{"type":"cancel","request_id":"r"}') == Cancel("r")
    assert parse_client_message('{"type":"resume","request_id":"r","after_seq":4}') == Resume(
        "r", 4
    )


@pytest.mark.parametrize("frame", ["not json", "[1,2]", '"str"', "{"])
def test_unparseable_frames_close_the_socket(frame: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_client_message(frame)
    assert info.value.close_code == CLOSE_INVALID_PAYLOAD


@pytest.mark.parametrize(
    ("frame", "request_id"),
    [
        ('{"type":"generate"}', None),
        ('{"type":"generate","request_id":5}', None),
        ('{"type":"fly","request_id":"r"}', "r"),
        ('{"type":"cancel","request_id":"r","extra":1}', "r"),
        ('{"type":"resume","request_id":"r","after_seq":-1}', "r"),
        ('{"type":"resume","request_id":"r","after_seq":true}', "r"),
    ],
)
def test_bad_messages_answer_their_request(frame: str, request_id: str | None) -> None:
    with pytest.raises(MessageError) as info:
        parse_client_message(frame)
    assert info.value.request_id == request_id
    answer = orjson.loads(encode_request_error(request_id, info.value.code, info.value.message))
    assert answer["type"] == "error" and answer["request_id"] == request_id
