"""A server killed with SIGKILL while turns are in flight, then started again on the same
database (a SQLite file, and a real Postgres server): the finished turns are intact, the ones in
flight are ``interrupted`` (partial), and nothing was written twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tokenwire.protocol import SSEDecoder, decode_event
from tokenwire.store import INTERRUPTED, Store

CONFIG = """
scripted = true
default_route = "scripted"

[store]
outbox_poll_s = 0.05
outbox_lease_s = 1.0    # a delivery the killed process had claimed is retried this soon

[router.routes.audit]
sink = { kind = "sql" }
"""


@asynccontextmanager
async def server(
    config: Path, database_url: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenwire.cli",
        "serve",
        "--config",
        str(config),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TOKENWIRE_STORE__URL": database_url},
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("tokenwire serving on http://"), line
        yield proc, line.split()[-1]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def delivered(client: httpx.AsyncClient, stream_id: str) -> None:
    """Wait (bounded) until the turn's `audit` route reports a delivery. Another process does
    the work, so there is no event to await here: poll its status."""
    async with asyncio.timeout(30):
        while True:
            routes = (await client.get(f"/v1/streams/{stream_id}")).json().get("routes") or []
            if any(r["route"] == "audit" and r["ok"] for r in routes):
                return
            await asyncio.sleep(0.05)


async def first_delta(client: httpx.AsyncClient, stream_id: str) -> None:
    """Return once the stream has shown visible text (so its turn is really in flight)."""
    decoder = SSEDecoder()
    async with client.stream("GET", f"/v1/streams/{stream_id}/events") as response:
        async for chunk in response.aiter_bytes():
            for message in decoder.feed(chunk):
                if decode_event(message.data).type == "text.delta":
                    return


async def test_sigkill_with_turns_in_flight_then_restart(tmp_path: Path, database_url: str) -> None:
    config = tmp_path / "tokenwire.toml"
    config.write_text(CONFIG)
    finished: dict[str, str] = {}
    in_flight: list[str] = []
    async with server(config, database_url) as (proc, url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for i in range(3):
                body = {"prompt": "x", "script": {"tokens": [f"answer {i}"]}}
                async with client.stream("POST", "/v1/streams", json=body) as response:
                    decoder = SSEDecoder()
                    events = [
                        decode_event(m.data)
                        async for chunk in response.aiter_bytes()
                        for m in decoder.feed(chunk)
                    ]
                assert events[-1].type == "done"
                finished[events[0].stream_id] = f"answer {i}"
            hang = {"tokens": ["half"], "fault": {"kind": "hang", "at": 1}}
            for _ in range(3):
                body = {"prompt": "x", "background": True, "script": hang}
                started = await client.post("/v1/streams", json=body)
                in_flight.append(started.json()["stream_id"])
            await asyncio.gather(*(first_delta(client, s) for s in in_flight))
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async with server(config, database_url) as (proc, url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for stream_id, answer in finished.items():
                status = (await client.get(f"/v1/streams/{stream_id}")).json()
                assert status["state"] == "completed"
                assert status["record"]["answer"] == answer
                # A delivery the killed process queued (or had claimed) is made by this one.
                await delivered(client, stream_id)
            for stream_id in in_flight:
                status = (await client.get(f"/v1/streams/{stream_id}")).json()
                assert status["state"] == "incomplete"
                assert status["record"]["reason"] == INTERRUPTED
                assert status["record"]["partial"] is True
        proc.send_signal(signal.SIGTERM)
        await proc.wait()

    store = Store(database_url)
    await store.open()
    try:
        for stream_id, answer in finished.items():
            turn = await store.get_turn(stream_id)
            assert turn is not None and turn["answer"] == answer
            assert turn["terminal"]["type"] == "done"
            # The sql route wrote each finished turn's record once, across both processes.
            records = await store.route_records(stream_id)
            assert [r["record"]["answer"] for r in records] == [answer]
        for stream_id in in_flight:
            turn = await store.get_turn(stream_id)
            assert turn is not None and turn["terminal"] is None
            assert await store.route_records(stream_id) == []
        # A second restart changes nothing: the interrupted turns stay as they were marked.
        assert await store.mark_interrupted() == 0
    finally:
        await store.aclose()
