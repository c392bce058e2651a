"""Redis going away under a running deployment: restarted (losing its data: the test server
keeps nothing on disk, the worst case), and paused (``CLIENT PAUSE``). No stream may be left
without its terminal event, none may get two, new requests are refused clearly while Redis
cannot take them, and everything works again once it is back, without restarting anything."""

from __future__ import annotations

import asyncio

import httpx
import redis.asyncio as aioredis

from tokenwire.protocol import Done, Error, Event, Reason

from ..support.cluster import Cluster, Process, client
from .test_scale_out import GUARD_S, Reader

SLOW = {"tokens": [f"w{i} " for i in range(40)], "delay_ms": 150}  # 6 s: outlives the outage


def one_terminal(events: list[Event]) -> Done | Error:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events and events[0].type == "start"
    assert [e.type for e in events].count("start") == 1
    terminals = [e for e in events if e.type in ("done", "error")]
    assert len(terminals) == 1 and terminals[0] is events[-1], [e.type for e in events]
    terminal = events[-1]
    assert isinstance(terminal, Done | Error)
    return terminal


async def ended_for(worker: Process, reason: str) -> float:
    """How many turns ``worker`` ended for ``reason`` (its ``tokenwire_turns_total``)."""
    async with client(worker) as http:
        text = (await http.get("/metrics")).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("tokenwire_turns_total{") and f'reason="{reason}"' in line
    )


def reason_of(terminal: Done | Error) -> str:
    return terminal.reason.value if isinstance(terminal, Done) else terminal.code


async def refused(gateway: Process) -> httpx.Response:
    async with client(gateway) as http:
        return await http.post("/v1/streams", json={"prompt": "x", "script": {"tokens": ["a"]}})


async def completes(gateway: Process) -> Done:
    async with client(gateway) as http:
        body = {"prompt": "again", "script": {"tokens": ["fine"]}}
        async with http.stream("POST", "/v1/streams", json=body) as response:
            assert response.status_code == 200, await response.aread()
            terminal = one_terminal(await Reader(response).to_end())
    assert isinstance(terminal, Done) and terminal.reason is Reason.STOP
    return terminal


async def test_redis_restarted_without_its_data(cluster: Cluster) -> None:
    gateway = await cluster.gateway()
    workers = [
        await cluster.worker("worker-1", concurrency=3),
        await cluster.worker("worker-2", concurrency=3),
    ]
    n_running, n_queued = 6, 3
    limits = httpx.Limits(max_connections=20)
    async with asyncio.timeout(GUARD_S), client(gateway, limits=limits) as http:
        readers: list[Reader] = []
        contexts = []
        for n in range(n_running + n_queued):
            body = {"prompt": f"q{n}", "script": SLOW}
            context = http.stream("POST", "/v1/streams", json=body)
            response = await context.__aenter__()
            contexts.append(context)
            readers.append(Reader(response))
        for reader in readers[:n_running]:
            await reader.until_text()
        cluster.redis.stop()
        # New turns are refused at once, with a clear error and when to come back.
        answer = await refused(gateway)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "overloaded"
        assert float(answer.headers["retry-after"]) > 0
        # The turns whose events cannot be written are stopped (not left generating).
        # Another process's counter: there is nothing to await but its next value.
        while sum([await ended_for(w, "log_unavailable") for w in workers]) < n_running:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        cluster.redis.start()
        endings = [one_terminal(await reader.to_end()) for reader in readers]
        for context in contexts:
            await context.__aexit__(None, None, None)
        # Every stream ended once, and said why: the event log failed them.
        assert [reason_of(t) for t in endings] == ["log_unavailable"] * len(endings)
        for terminal in endings[:n_running]:
            assert isinstance(terminal, Done) and terminal.partial and terminal.answer
        for terminal in endings[n_running:]:
            assert isinstance(terminal, Error) and terminal.retryable  # never ran: send again
        await completes(gateway)


async def test_redis_paused_for_five_seconds(cluster: Cluster) -> None:
    gateway = await cluster.gateway()
    await cluster.worker("worker-1", concurrency=10)
    await cluster.worker("worker-2", concurrency=10)
    limits = httpx.Limits(max_connections=20)
    async with asyncio.timeout(GUARD_S), client(gateway, limits=limits) as http:
        readers: list[Reader] = []
        contexts = []
        for n in range(8):
            context = http.stream("POST", "/v1/streams", json={"prompt": f"q{n}", "script": SLOW})
            readers.append(Reader(await context.__aenter__()))
            contexts.append(context)
        for reader in readers:
            await reader.until_text()
        admin = aioredis.from_url(cluster.redis.url)
        await admin.execute_command("CLIENT", "PAUSE", "5000", "ALL")
        await admin.aclose()
        # A request that Redis cannot take is refused (after the command timeout), not hung.
        answer = await refused(gateway)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "overloaded"
        endings = [one_terminal(await reader.to_end()) for reader in readers]
        for context in contexts:
            await context.__aexit__(None, None, None)
        # Each turn either outlived the pause or was ended honestly because of it.
        assert {reason_of(t) for t in endings} <= {"stop", "log_unavailable", "worker_lost"}
        for terminal in endings:
            if isinstance(terminal, Done) and terminal.reason is not Reason.STOP:
                assert terminal.partial
        await completes(gateway)
