"""Every request gets exactly one terminal event, whatever races: a seeded random schedule of
cancels 0-5 ms after the request, and of cancel / natural end / idle deadline / upstream fault
within +-20 ms of each other, over SSE, WebSocket and the scale-out path (gateway + worker on
a throwaway Redis).

Each transport runs as many iterations as fit in its wall-clock budget (the loop stops early
on a slow machine; the count is printed and must reach a floor that any machine passes), so
the file costs about a minute. A failure prints the seed and the schedule of the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

from tokenwire import Done, Engine, Error, Settings, create_app
from tokenwire.protocol import Event, SSEDecoder, TextDelta, decode_event
from tokenwire.testing import assert_turn_invariants

from .support.cluster import BASE_CONFIG, Cluster
from .support.redis import RedisServer
from .support.server import serve

SEED = int(os.environ.get("TOKENWIRE_RACE_SEED", "13"))
BUDGET_S = float(os.environ.get("TOKENWIRE_RACE_BUDGET_S", "6"))
"""Per transport: the loop starts no new request after this (a budget, not a deadline)."""
CONCURRENCY = 32
MIN_ITERATIONS = 200
"""The floor every machine reaches within the budget; a normal run does thousands."""
UNLIMITED_COMMANDS = {"ws_commands_per_s": 0, "max_turns_per_connection": 4 * CONCURRENCY}
"""One socket carries every race: far more commands than one user sends (the defaults would
close it with 4008)."""
GUARD_S = 60
"""Only stops a hung test (a request without a terminal); never decides a pass."""


@dataclass(frozen=True)
class Race:
    """One request's schedule."""

    tokens: tuple[str, ...]
    delay_ms: int
    cancel_after_ms: float | None
    """When the cancel is sent, after the request (SSE: after its headers)."""
    idle_s: float | None
    fault: dict[str, Any] | None

    def body(self) -> dict[str, Any]:
        script: dict[str, Any] = {"tokens": list(self.tokens), "delay_ms": self.delay_ms}
        if self.fault is not None:
            script["fault"] = self.fault
        body: dict[str, Any] = {"prompt": "race", "script": script}
        if self.idle_s is not None:
            body["deadlines"] = {"idle_s": self.idle_s, "first_token_s": self.idle_s + 0.05}
        return body


def schedule(rng: random.Random) -> Race:
    tokens = tuple(f"t{i} " for i in range(rng.randint(1, 6)))
    if rng.random() < 0.4:
        # Stop pressed right after Send.
        return Race(tokens, rng.randint(1, 5), rng.uniform(0, 5), None, None)
    delay_ms = rng.randint(2, 10)
    natural_end_ms = len(tokens) * delay_ms
    cancel = rng.random() < 0.5
    fault: dict[str, Any] | None = None
    if rng.random() < 0.4:
        kind = rng.choice(["fail", "truncate", "hang"])
        fault = {"kind": kind, "at": rng.randint(0, len(tokens)), "retryable": False}
    idle = rng.random() < 0.3 or (fault is not None and fault["kind"] == "hang" and not cancel)
    return Race(
        tokens,
        delay_ms,
        max(0.0, natural_end_ms + rng.uniform(-20, 20)) if cancel else None,
        max(0.001, delay_ms / 1000 + rng.uniform(-0.02, 0.02)) if idle else None,
        fault,
    )


def check(race: Race, events: list[Event], seed_note: str) -> str:
    """The promises for one request; returns how it ended (for the summary)."""
    note = f"{seed_note}: {race} -> {[e.type for e in events]}"
    terminal = assert_turn_invariants(events)
    text = "".join(e.delta for e in events if isinstance(e, TextDelta))
    if isinstance(terminal, Error):
        assert terminal.code != "cancelled", note
        assert race.fault is not None or race.idle_s is not None, note
        return f"error:{terminal.code}"
    assert isinstance(terminal, Done)
    if terminal.status == "completed":
        # Never `completed` when cut: the whole answer arrived.
        assert text == "".join(race.tokens) and not terminal.partial, note
        assert race.fault is None or race.fault["at"] >= len(race.tokens), note
    if terminal.reason.value == "cancelled":
        assert race.cancel_after_ms is not None and terminal.partial, note
    if race.fault is None and race.idle_s is None:
        assert terminal.reason.value in ("stop", "cancelled"), note
    return f"done:{terminal.reason.value}"


Runner = Callable[[Race, str], Awaitable[list[Event]]]


async def race_loop(name: str, run: Runner) -> dict[str, int]:
    """Run races with ``CONCURRENCY`` in flight until the budget is spent; check each."""
    rng = random.Random(f"{SEED}-{name}")
    outcomes: dict[str, int] = defaultdict(int)
    stop_at = time.monotonic() + BUDGET_S
    counter = 0

    async def one() -> None:
        nonlocal counter
        while time.monotonic() < stop_at:
            counter += 1
            race, note = schedule(rng), f"seed {SEED} {name} #{counter}"
            events = await run(race, f"{name}-{counter}")
            outcomes[check(race, events, note)] += 1

    async with asyncio.timeout(BUDGET_S + GUARD_S):
        await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    total = sum(outcomes.values())
    print(
        f"{name}: {total} races (seed {SEED}), 0 lost terminals: {dict(sorted(outcomes.items()))}"
    )
    assert total >= MIN_ITERATIONS, (total, outcomes)
    return outcomes


# -- SSE -------------------------------------------------------------------------------------


def sse_runner(http: httpx.AsyncClient) -> Runner:
    async def run(race: Race, _rid: str) -> list[Event]:
        events: list[Event] = []
        decoder = SSEDecoder()
        async with http.stream("POST", "/v1/streams", json=race.body()) as response:
            assert response.status_code == 200, await response.aread()
            canceller = None
            if race.cancel_after_ms is not None:
                stream_id = response.headers["x-tokenwire-stream-id"]
                canceller = asyncio.create_task(cancel_later(http, stream_id, race))
            async for chunk in response.aiter_bytes():
                events += [decode_event(m.data) for m in decoder.feed(chunk) if m.data]
            if canceller is not None:
                await canceller
        return events

    return run


async def cancel_later(http: httpx.AsyncClient, stream_id: str, race: Race) -> None:
    assert race.cancel_after_ms is not None
    await asyncio.sleep(race.cancel_after_ms / 1000)  # the schedule itself, not a wait
    response = await http.post(f"/v1/streams/{stream_id}/cancel")
    assert response.status_code == 200, response.text


# -- WebSocket -------------------------------------------------------------------------------


@dataclass
class Socket:
    """One WebSocket shared by every race; frames routed by request id."""

    ws: Any
    frames: dict[str, asyncio.Queue[dict[str, Any]]] = field(default_factory=dict)
    after_terminal: list[dict[str, Any]] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)

    async def route(self) -> None:
        async for raw in self.ws:
            data = orjson.loads(raw)
            rid = data["request_id"]
            if rid in self.ended:
                self.after_terminal.append(data)  # a second answer: a broken promise
            elif rid in self.frames:
                self.frames[rid].put_nowait(data)

    async def run(self, race: Race, rid: str) -> list[Event]:
        queue = self.frames[rid] = asyncio.Queue()
        await self.ws.send(
            orjson.dumps({"type": "generate", "request_id": rid, **race.body()}).decode()
        )
        if race.cancel_after_ms is not None:
            asyncio.get_running_loop().call_later(
                race.cancel_after_ms / 1000,
                lambda: asyncio.ensure_future(
                    self.ws.send(orjson.dumps({"type": "cancel", "request_id": rid}).decode())
                ),
            )
        events: list[Event] = []
        while True:
            data = await queue.get()
            assert "seq" in data, f"{rid} refused: {data}"
            data.pop("request_id")
            events.append(decode_event(data))
            if data["type"] in ("done", "error"):
                break
        self.ended.add(rid)
        del self.frames[rid]
        return events


@contextlib.asynccontextmanager
async def socket_on(url: str) -> AsyncIterator[Socket]:
    async with websockets.connect(url.replace("http://", "ws://") + "/v1/ws") as ws:
        sock = Socket(ws)
        router = asyncio.create_task(sock.route())
        try:
            yield sock
        finally:
            router.cancel()
    assert sock.after_terminal == [], sock.after_terminal[:5]


# -- the three transports --------------------------------------------------------------------


def embedded_settings() -> Settings:
    return Settings.model_validate(
        {
            "providers": {"s": {"kind": "scripted"}},
            "routes": {"default": {"providers": ["s"]}},
            "retry": {"attempts_per_provider": 1},
            "store": {"url": ""},
            "limits": UNLIMITED_COMMANDS,
        }
    )


async def test_races_over_sse() -> None:
    engine = Engine(embedded_settings())
    async with serve(create_app(engine=engine)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=GUARD_S) as http:
            await race_loop("sse", sse_runner(http))
    assert engine.active() == []


async def test_races_over_websocket() -> None:
    engine = Engine(embedded_settings())
    async with serve(create_app(engine=engine)) as url, socket_on(url) as sock:
        await race_loop("ws", sock.run)
    assert engine.active() == []


async def test_races_over_the_cluster(redis: RedisServer, tmp_path: Path) -> None:
    limits = "".join(f"{k} = {v}\n" for k, v in UNLIMITED_COMMANDS.items())
    cluster = Cluster(redis, tmp_path, config=f"{BASE_CONFIG}\n[limits]\n{limits}")
    try:
        gateway = await cluster.gateway()
        await cluster.worker("worker-1", concurrency=CONCURRENCY * 2)
        async with socket_on(gateway.url) as sock:
            await race_loop("cluster-ws", sock.run)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=GUARD_S) as http:
            await race_loop("cluster-sse", sse_runner(http))
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        await cluster.close()
