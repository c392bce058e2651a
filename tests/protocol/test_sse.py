from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.protocol import (
    SSEDecoder,
    SSEMessage,
    TextDelta,
    TurnLifecycle,
    decode_event,
    encode_sse_comment,
    encode_sse_event,
    encode_sse_message,
)
from tokenwire.protocol.errors import RemoteProtocolError


def _feed_split(data: bytes, cuts: list[int]) -> list[SSEMessage]:
    decoder = SSEDecoder()
    out: list[SSEMessage] = []
    last = 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)):
        out += decoder.feed(data[last:cut])
        last = cut
    out += decoder.feed(data[last:])
    return out


def _stamped_delta(text: str, seq: int = 1) -> TextDelta:
    event = TextDelta(delta=text, stream_id="s", seq=seq)
    return event


TRICKY = [
    '\n\ndata: {"type":"done"}\n\n',
    "lone\rcarriage",
    "crlf\r\nline",
    "id: 99\nevent: done\n\n",
    ": comment-looking\n\n",
    "unicode ✓ 你好 \u2028 \u2029 \U0001f600",
    "\x00nul and \x1b escape",
    "\r",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_text_round_trips_as_one_event(text: str) -> None:
    frame = encode_sse_event(_stamped_delta(text))
    messages = SSEDecoder().feed(frame)
    assert len(messages) == 1
    assert messages[0].event == "text.delta"
    assert messages[0].id == "1"
    event = decode_event(messages[0].data)
    assert isinstance(event, TextDelta)
    assert event.delta == text


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.text(min_size=1), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_text_split_anywhere_arrives_byte_identical(texts: list[str], cuts: list[int]) -> None:
    lifecycle = TurnLifecycle("s")
    from tokenwire.protocol import Start

    frames = [encode_sse_event(lifecycle.send(Start(model="m", route="r", created_at=0.0)))]
    frames += [encode_sse_event(lifecycle.send(TextDelta(delta=t))) for t in texts]
    messages = _feed_split(b"".join(frames), cuts)
    assert len(messages) == len(texts) + 1
    deltas = [decode_event(m.data) for m in messages[1:]]
    assert [d.delta for d in deltas if isinstance(d, TextDelta)] == texts
    assert [m.id for m in messages] == [str(i) for i in range(1, len(texts) + 2)]


@settings(max_examples=200, deadline=None)
@given(
    data=st.text(),
    event=st.one_of(st.none(), st.text(alphabet="abcdefghij.", min_size=1, max_size=10)),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_generic_messages_round_trip(data: str, event: str | None, cuts: list[int]) -> None:
    frame = encode_sse_message(data, event=event, id="7")
    messages = _feed_split(frame, cuts)
    assert len(messages) == 1
    # Multi-line data travels as several data: lines; any line ending comes back as "\n".
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert messages[0].data == expected
    assert messages[0].event == (event or "message")


def test_line_endings_crlf_lf_and_cr_split_across_chunks() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    out = decoder.feed(b"\r")
    assert [m.data for m in out] == ["a\nb"]


def test_comments_are_counted_not_dispatched() -> None:
    decoder = SSEDecoder()
    out = decoder.feed(encode_sse_comment("keep-alive") + b":\n\ndata: x\n\n")
    assert [m.data for m in out] == ["x"]
    assert decoder.comments == 2


def test_bom_event_id_persistence_and_retry() -> None:
    decoder = SSEDecoder()
    out = decoder.feed(b"\xef\xbb\xbfid: 5\nretry: 100\ndata: one\n\ndata: two\n\n")
    assert [(m.data, m.id, m.retry) for m in out] == [("one", "5", 100), ("two", "5", 100)]
    assert decoder.last_event_id == "5"


def test_event_without_data_is_not_dispatched_and_eof_discards_pending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: x\n\n") == []
    assert decoder.feed(b"data: half") == []
    assert decoder.has_pending
    assert decoder.flush() == []
    assert not decoder.has_pending


def test_field_without_space_and_unknown_fields() -> None:
    out = SSEDecoder().feed(b"data:tight\nfoo: bar\ndata\n\n")
    assert [m.data for m in out] == ["tight\n"]


def test_overlong_line_is_a_protocol_error() -> None:
    decoder = SSEDecoder(max_line_bytes=16)
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"data: " + b"x" * 64)


def test_encoder_refuses_newlines_where_they_would_break_framing() -> None:
    with pytest.raises(ValueError):
        encode_sse_message("x", id="a\nb")
    with pytest.raises(ValueError):
        encode_sse_comment("a\nb")
