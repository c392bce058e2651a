"""The gateway's reader against a real redis-server: its local copy of a stream never answers
for less than Redis held when it was asked, even while its tail is behind."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tokenwire.cluster import Keys, RedisLogReader, RedisLogWriter
from tokenwire.cluster.connection import connect
from tokenwire.cluster.scripts import CLAIM
from tokenwire.config import RedisSettings
from tokenwire.protocol import Done, Event, Reason, Start, TextDelta, TextDone, TurnLifecycle

from ..support.redis import RedisServer

GUARD_S = 30


class HeldLink:
    """A loopback TCP link to Redis whose replies can be held back on demand: a network that
    delays one connection (here, the reader's tail) while others flow."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.holding = asyncio.Event()
        """Set once a reply is held: Redis has answered, the client has not got it."""
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def hold(self) -> None:
        self.holding.clear()
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    async def _link(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self._port)
        for source, sink, gated in ((client_r, server_w, False), (server_r, client_w, True)):
            task = asyncio.ensure_future(self._pump(source, sink, gated))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, gated: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                if gated and not self._flowing.is_set():
                    self.holding.set()
                    await self._flowing.wait()
                sink.write(chunk)
                await sink.drain()
        sink.close()

    async def aclose(self) -> None:
        self.release()
        for task in list(self._pumps):
            task.cancel()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def link(redis: RedisServer) -> AsyncIterator[HeldLink]:
    held = HeldLink(redis.port)
    await held.start()
    try:
        yield held
    finally:
        await held.aclose()


def events_of(stream_id: str, texts: list[str]) -> list[Event]:
    lifecycle = TurnLifecycle(stream_id)
    events: list[Event] = [
        lifecycle.send(Start(conversation_id=None, model="m", route="r", created_at=time.time()))
    ]
    events += [lifecycle.send(TextDelta(delta=text)) for text in texts]
    events.append(lifecycle.send(TextDone(text="".join(texts))))
    done = Done(
        answer="".join(texts),
        status="completed",
        partial=False,
        reason=Reason.STOP,
        model="m",
        route="r",
        attempts=1,
    )
    events.append(lifecycle.send(done))
    return events


async def start_stream(
    direct: Any, writer: RedisLogWriter, settings: RedisSettings, stream_id: str
) -> None:
    """Claim the stream's run as a worker would, and open its log for writing."""
    keys = Keys(settings.prefix)
    await direct.register_script(CLAIM)(keys=[keys.run(stream_id)], args=["token"])
    writer.claim(stream_id, "token")
    writer.open(stream_id)


async def write(writer: RedisLogWriter, stream_id: str, events: list[Event]) -> None:
    """Append ``events`` and wait until Redis holds them."""
    for event in events:
        writer.append(stream_id, event)
    assert await writer.flushed(stream_id)


async def test_a_stream_already_followed_is_caught_up_before_it_answers(
    redis: RedisServer, link: HeldLink
) -> None:
    """Issue 13 item 15: a client that saw the terminal event through gateway A resumes on
    gateway B at its seq. B already follows the stream, and its tail has not copied the end
    yet: B must still find the terminal (an immediate end), not a cursor "ahead of the
    stream" (400)."""
    settings = RedisSettings(url=redis.url)
    direct = connect(settings)
    tail = connect(RedisSettings(url=f"redis://127.0.0.1:{link.port}/0"), block_s=1.0)
    writer = RedisLogWriter(direct, settings, retention_s=60, max_events=1000)
    reader = RedisLogReader(
        direct, tail, settings, retention_s=60, max_events=1000, max_finished=100
    )
    stream_id = "st_caught_up"
    events = events_of(stream_id, ["a", "b"])
    try:
        async with asyncio.timeout(GUARD_S):
            await start_stream(direct, writer, settings, stream_id)
            await write(writer, stream_id, events[:2])
            await reader.track(stream_id)
            assert reader.head(stream_id) == 2
            # The tail falls behind: what Redis answers it is held on the way.
            link.hold()
            await write(writer, stream_id, events[2:])
            await reader.track(stream_id)  # what a lookup on gateway B does
            assert reader.head(stream_id) == events[-1].seq
            assert reader.terminal(stream_id) == events[-1]
            assert reader.follower(stream_id, 0).take() == events
            link.release()
    finally:
        await reader.aclose()
        await writer.aclose()
        await direct.aclose()
        await tail.aclose()


async def test_a_lookup_joining_an_earlier_load_is_caught_up_before_it_answers(
    redis: RedisServer, link: HeldLink
) -> None:
    """The same resume on gateway B while another of B's readers is loading the stream: the
    load read Redis before the terminal was written, and the resume joins it. It must still
    find the terminal."""
    settings = RedisSettings(url=redis.url)
    direct = connect(settings)
    held = connect(RedisSettings(url=f"redis://127.0.0.1:{link.port}/0"))
    tail = connect(RedisSettings(url=f"redis://127.0.0.1:{link.port}/0"), block_s=1.0)
    writer = RedisLogWriter(direct, settings, retention_s=60, max_events=1000)
    reader = RedisLogReader(held, tail, settings, retention_s=60, max_events=1000, max_finished=100)
    stream_id = "st_joined_load"
    events = events_of(stream_id, ["a", "b"])
    try:
        async with asyncio.timeout(GUARD_S):
            await start_stream(direct, writer, settings, stream_id)
            await write(writer, stream_id, events[:2])
            await held.ping()  # connected, so the load below is one request on the link
            link.hold()
            first = asyncio.ensure_future(reader.track(stream_id))
            await link.holding.wait()  # Redis answered its XRANGE; the answer waits on the way
            await write(writer, stream_id, events[2:])
            second = asyncio.ensure_future(reader.track(stream_id))  # joins the first load
            link.release()
            await first
            await second
            assert reader.head(stream_id) == events[-1].seq
            assert reader.terminal(stream_id) == events[-1]
    finally:
        await reader.aclose()
        await writer.aclose()
        await direct.aclose()
        await held.aclose()
        await tail.aclose()
