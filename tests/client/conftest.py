"""Shared by the client tests: a real server on loopback (tests/server/conftest.py) and a
loopback TCP proxy that cuts connections, the test double for a network fault."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from tokenwire.client import ResumePolicy
from tokenwire.protocol import Event, SSEDecoder, decode_event

NO_WAIT = ResumePolicy(max_attempts=5, backoff_initial_s=0.0, backoff_max_s=0.0)
"""Resume at once: the tests' faults are instantaneous, and waiting would only slow them."""


@dataclass
class _Pipe:
    index: int
    budget: int | None
    """Bytes the server may still send to the client before the connection is cut."""
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    sent: int = 0
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    """Cleared: the server's bytes are held back (a connection gone silent, not closed)."""

    def __post_init__(self) -> None:
        self.flowing.set()


class CuttingProxy:
    """Forwards loopback TCP connections to ``port``; connection ``i`` is cut (both sides
    closed) after ``cuts[i]`` bytes from the server, mid-frame wherever that falls. ``arm``
    cuts the latest connection after a number of further bytes; ``hold`` keeps a connection
    waiting before it reaches the server; ``stall`` makes the latest one go silent."""

    def __init__(self, port: int, cuts: list[int | None] | None = None) -> None:
        self.port = port
        self.cuts = list(cuts or [])
        self.pipes: list[_Pipe] = []
        self.cuts_made = 0
        self._holds: dict[int, asyncio.Event] = {}
        self._opened = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def hold(self, index: int) -> asyncio.Event:
        """Connection ``index`` waits for the returned event before reaching the server."""
        gate = self._holds[index] = asyncio.Event()
        return gate

    def arm(self, after: int) -> None:
        """Cut the latest connection after ``after`` more bytes from the server."""
        self.pipes[-1].budget = after

    def stall(self) -> None:
        """Stop passing the latest connection's bytes to the client, without closing it."""
        self.pipes[-1].flowing.clear()

    def cut_now(self) -> None:
        """Cut the latest connection at once."""
        self.cuts_made += 1
        for writer in self.pipes[-1].writers:
            writer.close()

    async def wait_connections(self, count: int) -> None:
        async with self._opened:
            await self._opened.wait_for(lambda: len(self.pipes) >= count)

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index = len(self.pipes)
        pipe = _Pipe(index, self.cuts[index] if index < len(self.cuts) else None, [writer])
        self.pipes.append(pipe)
        async with self._opened:
            self._opened.notify_all()
        pumps: list[asyncio.Task[None]] = []
        try:
            gate = self._holds.get(index)
            if gate is not None:
                await gate.wait()
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
            pipe.writers.append(up_writer)
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer, None)),
                asyncio.create_task(self._pump(up_reader, writer, pipe)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except (asyncio.CancelledError, OSError):
            pass  # the proxy is shutting down, or a side went away: either way, this pipe ends
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await self._close(pipe)
            self._tasks.discard(task)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, pipe: _Pipe | None
    ) -> None:
        while data := await source.read(4096):
            if pipe is not None:
                await pipe.flowing.wait()
            if pipe is not None and pipe.budget is not None and len(data) >= pipe.budget:
                sink.write(data[: pipe.budget])
                await sink.drain()
                pipe.sent += pipe.budget
                self.cuts_made += 1
                return
            sink.write(data)
            await sink.drain()
            if pipe is not None:
                pipe.sent += len(data)
                if pipe.budget is not None:
                    pipe.budget -= len(data)

    async def _close(self, pipe: _Pipe) -> None:
        for writer in pipe.writers:
            writer.close()
        for writer in pipe.writers:
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def replay(url: str, stream_id: str) -> list[Event]:
    """The whole stream as the server's log holds it, read in one clean request."""
    decoder = SSEDecoder()
    events: list[Event] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        http.stream("GET", f"/v1/streams/{stream_id}/events") as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            events += [decode_event(m.data) for m in decoder.feed(chunk)]
    return events


@contextlib.asynccontextmanager
async def proxied(
    port_url: str, cuts: list[int | None] | None = None
) -> AsyncIterator[CuttingProxy]:
    port = httpx.URL(port_url).port
    assert port is not None
    async with CuttingProxy(port, cuts) as proxy:
        yield proxy
