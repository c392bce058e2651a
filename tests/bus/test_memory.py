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
