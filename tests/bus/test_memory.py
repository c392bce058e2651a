from __future__ import annotations

import asyncio

import pytest

from tokenwire.bus import MemoryEventLog, ResumeUnavailable, UnknownStream, follow
from tokenwire.protocol import Done, Event, Reason, Start, TextDelta, TurnLifecycle


def _events(n: int) -> tuple[TurnLifecycle, list[Event]]:
    lc = TurnLifecycle("s")
    out = [lc.send(Start(model="m", route="r", created_at=0.0))]
    out += [lc.send(TextDelta(delta=str(i))) for i in range(n)]
    return lc, out


def _done(lc: TurnLifecycle) -> Event:
    return lc.send(
        Done(
            answer="",
            status="completed",
            partial=False,
            reason=Reason.STOP,
            model="m",
            route="r",
            attempts=1,
        )
    )


async def _read_all(log: MemoryEventLog, after: int = 0) -> list[Event]:
    return [e async for batch in follow(log.follower("s", after)) for e in batch]


async def test_replay_then_live_without_gap_or_duplicate() -> None:
    log = MemoryEventLog()
    log.open("s")
    lc, events = _events(3)
    for e in events:
        log.append("s", e)
    reader = asyncio.create_task(_read_all(log, after=2))
    await asyncio.sleep(0)  # let the reader replay and start waiting
    more = [lc.send(TextDelta(delta="x")), _done(lc)]
    for e in more:
        log.append("s", e)
    got = await reader
    assert [e.seq for e in got] == [3, 4, 5, 6]
    assert log.terminal("s") == more[-1]


async def test_many_followers_each_get_everything() -> None:
    log = MemoryEventLog()
    log.open("s")
    readers = [asyncio.create_task(_read_all(log)) for _ in range(5)]
    lc, events = _events(10)
    for e in [*events, _done(lc)]:
        log.append("s", e)
        await asyncio.sleep(0)
    results = await asyncio.gather(*readers)
    assert all([e.seq for e in r] == list(range(1, 13)) for r in results)


async def test_a_cancelled_follower_does_not_disturb_the_others() -> None:
    log = MemoryEventLog()
    log.open("s")
    a = asyncio.create_task(_read_all(log))
    b = asyncio.create_task(_read_all(log))
    await asyncio.sleep(0)
    a.cancel()
    lc, events = _events(1)
    for e in [*events, _done(lc)]:
        log.append("s", e)
    assert [e.seq for e in await b] == [1, 2, 3]


async def test_trimmed_history_is_an_explicit_resume_error() -> None:
    log = MemoryEventLog(max_events=100)
    log.open("s")
    _, events = _events(200)
    for e in events:
        log.append("s", e)
    with pytest.raises(ResumeUnavailable):
        await _read_all(log, after=0)
    assert log.head("s") == 201


async def test_finished_streams_expire_after_retention() -> None:
    expired = asyncio.Event()
    log = MemoryEventLog(retention_s=0.01, on_expire=lambda _id: expired.set())
    log.open("s")
    lc, events = _events(0)
    for e in [*events, _done(lc)]:
        log.append("s", e)
    assert "s" in log
    async with asyncio.timeout(10):
        await expired.wait()
    assert "s" not in log
    with pytest.raises(UnknownStream):
        log.head("s")


def test_unknown_and_duplicate_streams() -> None:
    log = MemoryEventLog()
    with pytest.raises(UnknownStream):
        log.terminal("nope")
    log.open("s")
    with pytest.raises(ValueError):
        log.open("s")


async def test_wake_ends_a_wait_without_events() -> None:
    log = MemoryEventLog()
    log.open("s")
    follower = log.follower("s")
    waiting = asyncio.create_task(follower.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    follower.wake()
    await waiting
    assert follower.take() == [] and not follower.finished


async def test_take_advances_the_cursor_and_sees_the_end() -> None:
    log = MemoryEventLog()
    log.open("s")
    lc, events = _events(2)
    for e in events:
        log.append("s", e)
    follower = log.follower("s", after_seq=1)
    assert [e.seq for e in follower.take()] == [2, 3]
    assert follower.cursor == 3 and follower.take() == []
    log.append("s", _done(lc))
    assert [e.type for e in follower.take()] == ["done"]
    assert follower.finished


async def test_only_the_newest_finished_streams_are_kept() -> None:
    log = MemoryEventLog(max_finished=2)
    for name in ("a", "b", "c"):
        log.open(name)
        lc = TurnLifecycle(name)
        log.append(name, lc.send(Start(model="m", route="r", created_at=0.0)))
        log.append(name, _done(lc))
    log.open("live")  # a stream in flight is never dropped for space
    assert "a" not in log and "b" in log and "c" in log and "live" in log


def _finish(log: MemoryEventLog, name: str, deltas: list[str]) -> list[Event]:
    """A whole stream of ``deltas`` and its terminal, appended to ``log``."""
    log.open(name)
    lc = TurnLifecycle(name)
    events = [lc.send(Start(model="m", route="r", created_at=0.0))]
    events += [lc.send(TextDelta(delta=d)) for d in deltas]
    events.append(_done(lc))
    for e in events:
        log.append(name, e)
    return events


async def test_a_finished_stream_is_packed_and_replays_exactly() -> None:
    """Issue 13 item 6: retained streams are held packed, in far fewer bytes, and every
    cursor still replays exactly what was appended."""
    log = MemoryEventLog()
    events = _finish(log, "s", [f"w{i} " for i in range(500)])
    live_bytes = log.retained_bytes
    await asyncio.sleep(0)  # packing runs on the loop's next turn, after the readers' wake-up
    assert log.retained_bytes < live_bytes / 3
    for after in (0, 1, 250, 500, 501):
        follower = log.follower("s", after)
        assert follower.take() == events[after:]
        assert follower.finished
    assert log.terminal("s") == events[-1] and log.head("s") == events[-1].seq


async def test_a_stream_is_bounded_in_bytes_and_a_cursor_into_what_was_trimmed_is_refused() -> None:
    log = MemoryEventLog(max_stream_bytes=20_000)
    log.open("s")
    lc, events = _events(0)
    log.append("s", events[0])
    behind = log.follower("s", 0)
    for i in range(1000):
        event = lc.send(TextDelta(delta=f"{i:03d}" * 30))  # ~90 bytes of text each
        events.append(event)
        log.append("s", event)
        assert log.retained_bytes <= 20_000
    with pytest.raises(ResumeUnavailable):
        behind.take()  # never a silent jump over what was dropped
    with pytest.raises(ResumeUnavailable):
        log.follower("s", 0).take()
    head = log.head("s")
    assert log.follower("s", head - 5).take() == events[-5:]


async def test_finished_streams_are_dropped_oldest_first_past_the_total_bytes() -> None:
    log = MemoryEventLog(max_retained_bytes=60_000, pack_finished=False)
    log.open("live")
    log.append("live", _events(0)[1][0])
    for n in range(10):
        _finish(log, f"s{n}", ["x" * 100] * 100)  # ~17 KB each
        assert log.retained_bytes <= 60_000
    kept = [n for n in range(10) if f"s{n}" in log]
    assert kept == list(range(10 - len(kept), 10)) and 1 <= len(kept) < 10
    assert "live" in log  # a stream in flight is never dropped for space
    with pytest.raises(UnknownStream):
        log.follower("s0", 0)
