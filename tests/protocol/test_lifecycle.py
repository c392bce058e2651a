from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.protocol import (
    Done,
    Error,
    Event,
    LocalProtocolError,
    Phase,
    Reason,
    Start,
    Status,
    StructuredError,
    TextDelta,
    TextDone,
    ToolCall,
    TurnLifecycle,
    TurnState,
    Usage,
)


def _start() -> Start:
    return Start(model="m", route="r", created_at=0.0)


def _done(reason: Reason = Reason.STOP) -> Done:
    return Done(
        answer="",
        status="completed",
        partial=False,
        reason=reason,
        model="m",
        route="r",
        attempts=1,
    )


def _error() -> Error:
    return Error(code="upstream_error", message="x", retryable=True)


def test_seq_starts_at_one_and_has_no_gaps() -> None:
    lc = TurnLifecycle("s1")
    events = [
        lc.send(_start()),
        lc.send(Status(phase=Phase.GENERATING)),
        lc.send(TextDelta(delta="a")),
        lc.send(TextDelta(delta="b")),
        lc.send(TextDone(text="ab")),
        lc.send(Usage(input_tokens=1, output_tokens=2)),
        lc.send(_done()),
    ]
    assert [e.seq for e in events] == list(range(1, 8))
    assert {e.stream_id for e in events} == {"s1"}
    assert lc.closed


def test_nothing_after_the_terminal_event() -> None:
    lc = TurnLifecycle("s")
    lc.send(_start())
    lc.send(_done())
    for draft in (TextDelta(delta="x"), _done(), _error(), Status(phase=Phase.FINALIZING)):
        with pytest.raises(LocalProtocolError):
            lc.send(draft)
    assert lc.seq == 2


def test_start_must_come_first() -> None:
    with pytest.raises(LocalProtocolError):
        TurnLifecycle("s").send(TextDelta(delta="x"))


def test_error_is_impossible_once_output_is_visible() -> None:
    lc = TurnLifecycle("s")
    lc.send(_start())
    assert not lc.visible
    lc.send(TextDelta(delta="x"))
    assert lc.visible
    with pytest.raises(LocalProtocolError):
        lc.send(_error())
    assert lc.state is TurnState.STREAMING
    lc.send(_done(Reason.UPSTREAM_ERROR))


def test_a_tool_call_is_visible_output_too() -> None:
    lc = TurnLifecycle("s")
    lc.send(_start())
    lc.send(ToolCall(call_id="c", name="f", arguments="{}"))
    assert lc.visible
    assert not lc.can_send("error")


def test_text_done_must_equal_the_deltas() -> None:
    lc = TurnLifecycle("s")
    lc.send(_start())
    lc.send(TextDelta(delta="ab"))
    with pytest.raises(LocalProtocolError):
        lc.send(TextDone(text="abc"))
    lc.send(TextDone(text="ab"))
    with pytest.raises(LocalProtocolError):
        lc.send(TextDelta(delta="late"))


def test_empty_delta_is_refused() -> None:
    lc = TurnLifecycle("s")
    lc.send(_start())
    with pytest.raises(LocalProtocolError):
        lc.send(TextDelta(delta=""))


def test_error_before_output_and_structured_error_keeps_it_possible() -> None:
    lc = TurnLifecycle("s")
    lc.send(_start())
    lc.send(StructuredError(code="c", message="m"))
    assert lc.can_send("error")
    lc.send(_error())
    assert lc.closed


_DRAFTS: dict[str, Event] = {
    "start": _start(),
    "status": Status(phase=Phase.GENERATING),
    "delta": TextDelta(delta="x"),
    "tool": ToolCall(call_id="c", name="f", arguments="{}"),
    "usage": Usage(input_tokens=1, output_tokens=1),
    "done": _done(),
    "error": _error(),
}


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(sorted(_DRAFTS)), max_size=30))
def test_whatever_is_attempted_the_accepted_stream_is_well_formed(names: list[str]) -> None:
    lc = TurnLifecycle("s")
    accepted: list[Event] = []
    for name in names:
        draft = _DRAFTS[name]
        if name == "delta" and lc.state is TurnState.TEXT_DONE:
            continue
        try:
            accepted.append(lc.send(draft))
        except LocalProtocolError:
            pass
    assert [e.seq for e in accepted] == list(range(1, len(accepted) + 1))
    terminals = [i for i, e in enumerate(accepted) if e.type in ("done", "error")]
    assert len(terminals) <= 1
    if terminals:
        assert terminals[0] == len(accepted) - 1
    if accepted:
        assert accepted[0].type == "start"
    for i, event in enumerate(accepted):
        if event.type == "error":
            assert not any(e.type in ("text.delta", "tool.call") for e in accepted[:i])


def test_text_delta_fast_path_follows_the_same_rules() -> None:
    lc = TurnLifecycle("s")
    with pytest.raises(LocalProtocolError):
        lc.text_delta("before start")
    lc.send(_start())
    with pytest.raises(LocalProtocolError):
        lc.text_delta("")
    event = lc.text_delta("hi")
    assert (event.type, event.stream_id, event.seq, event.delta) == ("text.delta", "s", 2, "hi")
    assert lc.visible and lc.streamed_text == "hi"
    lc.send(TextDone(text="hi"))
    with pytest.raises(LocalProtocolError):
        lc.text_delta("late")


def test_structured_events_never_count_as_visible_output() -> None:
    from tokenwire.protocol import StructuredDone, StructuredPartial

    lc = TurnLifecycle("s")
    lc.send(_start())
    lc.send(StructuredPartial(data={"a": 1}))
    lc.send(StructuredDone(data={"a": 1}))
    assert lc.state is TurnState.ACCEPTED and not lc.visible
    lc.send(_error())  # the text call failed before any text: still an honest error
    assert lc.closed


def test_structured_events_may_follow_text_done() -> None:
    lc = TurnLifecycle("s")
    lc.send(_start())
    lc.send(TextDelta(delta="x"))
    lc.send(TextDone(text="x"))
    lc.send(StructuredError(code="json_invalid", message="m"))
    lc.send(_done())
    assert lc.closed


def test_a_structured_reset_is_system_channel_in_every_open_state() -> None:
    from tokenwire.protocol import StructuredPartial, StructuredReset

    lc = TurnLifecycle("s")
    lc.send(_start())
    lc.send(StructuredPartial(data={"a": "x"}))
    reset = lc.send(StructuredReset(attempt=2, code="schema_invalid"))
    assert (reset.seq, reset.stream_id) == (3, "s")
    assert lc.state is TurnState.ACCEPTED and not lc.visible
    lc.send(TextDelta(delta="x"))
    lc.send(StructuredReset(attempt=3, code="json_invalid"))
    lc.send(TextDone(text="x"))
    lc.send(StructuredReset(attempt=4, code="json_incomplete"))
    assert lc.state is TurnState.TEXT_DONE
    lc.send(_done())
    with pytest.raises(LocalProtocolError):
        lc.send(StructuredReset(attempt=5, code="json_invalid"))
