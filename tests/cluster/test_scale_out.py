"""Scale-out end to end: gateways and workers as real processes meeting in a real
redis-server, clients over real HTTP. What a production deployment's users would see when a
worker dies, a client reconnects elsewhere, or a cancel arrives at another gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from tokenwire.protocol import (
    Done,
    Error,
    Event,
    Reason,
    SSEDecoder,
    TextDelta,
    TextDone,
    decode_event,
)
from tokenwire.store import Store

from ..support.cluster import Cluster, Process, client

GUARD_S = 120


async def read_events(response: httpx.Response, seen: list[Event] | None = None) -> list[Event]:
    decoder = SSEDecoder()
    events: list[Event] = [] if seen is None else seen
    async for chunk in response.aiter_bytes():
        for message in decoder.feed(chunk):
            if message.data:
                events.append(decode_event(message.data))
    return events


def check_stream(events: list[Event]) -> Done:
    """One stream as a client saw it: seq 1, 2, 3... with no gap or repeat, one ``start``, one
    terminal event and it is last, the deltas equal ``text.done``."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), [e.seq for e in events]
    assert [e.type for e in events].count("start") == 1 and events[0].type == "start"
    terminals = [e for e in events if e.type in ("done", "error")]
    assert len(terminals) == 1 and terminals[0] is events[-1]
    text = "".join(e.delta for e in events if isinstance(e, TextDelta))
    assert [e.text for e in events if isinstance(e, TextDone)] in ([], [text])
    done = events[-1]
    assert isinstance(done, Done), done
    return done


async def replay(gateway: Process, stream_id: str) -> list[Event]:
    async with client(gateway) as http:
        async with http.stream("GET", f"/v1/streams/{stream_id}/events") as response:
            assert response.status_code == 200, await response.aread()
            return await read_events(response)


async def test_a_worker_killed_mid_run_loses_no_turn(cluster: Cluster) -> None:
    gateways = [await cluster.gateway("gateway-a"), await cluster.gateway("gateway-b")]
    workers = [
        await cluster.worker("worker-1", concurrency=150),
        await cluster.worker("worker-2", concurrency=150),
    ]
    tokens = [f"t{i} " for i in range(12)]
    n_turns = 200
    # Half the turns show text at once; half only after a long first token, so when the worker
    # dies some of its turns have shown text (they must end worker_lost) and some have not
    # (they must run again, elsewhere, as one stream).
    scripts = [
        {"tokens": tokens, "delay_ms": 150}
        if n % 2 == 0
        else {"tokens": tokens, "delay_ms": 5, "first_delay_ms": 12_000}
        for n in range(n_turns)
    ]
    seen: list[list[Event]] = [[] for _ in range(n_turns)]
    stream_ids: list[str | None] = [None] * n_turns
    started = asyncio.Event()
    limits = httpx.Limits(max_connections=n_turns, max_keepalive_connections=n_turns)
    http = [client(g, limits=limits) for g in gateways]

    def progress() -> None:
        if all(s for s in seen) and all(
            any(isinstance(e, TextDelta) for e in seen[n]) for n in range(0, n_turns, 2)
        ):
            started.set()

    async def turn(n: int) -> None:
        body = {"prompt": f"q{n}", "script": scripts[n]}
        async with http[n % 2].stream("POST", "/v1/streams", json=body) as response:
            assert response.status_code == 200, await response.aread()
            stream_ids[n] = response.headers["x-tokenwire-stream-id"]
            decoder = SSEDecoder()
            async for chunk in response.aiter_bytes():
                for message in decoder.feed(chunk):
                    if message.data:
                        seen[n].append(decode_event(message.data))
                progress()

    async with asyncio.timeout(GUARD_S):
        turns = [asyncio.ensure_future(turn(n)) for n in range(n_turns)]
        await started.wait()
        # Which worker runs what, then kill one that has turns of both kinds.
        store = aioredis.from_url(cluster.redis.url)
        running = {
            k.decode(): orjson.loads(v)["worker"]
            for k, v in (await store.hgetall("tw:active")).items()
        }
        shown = {
            stream_ids[n]: any(isinstance(e, TextDelta) for e in seen[n]) for n in range(n_turns)
        }
        victim = max(workers, key=lambda w: sum(1 for who in running.values() if who == w.name))
        victim.kill()
        lost_with_text = {s for s, who in running.items() if who == victim.name and shown.get(s)}
        lost_without = {s for s, who in running.items() if who == victim.name and not shown.get(s)}
        await asyncio.gather(*turns)
        await store.aclose()
        for h in http:
            await h.aclose()

    assert lost_with_text and lost_without, (len(lost_with_text), len(lost_without))
    reasons: Counter[str] = Counter()
    for n in range(n_turns):
        done = check_stream(seen[n])
        reasons[done.reason.value] += 1
        stream_id = stream_ids[n]
        if stream_id in lost_with_text:
            # It had shown text: ended honestly, with what was streamed as its answer.
            assert done.reason is Reason.WORKER_LOST and done.partial
            streamed = "".join(e.delta for e in seen[n] if isinstance(e, TextDelta))
            assert done.answer == streamed.strip()
        elif stream_id in lost_without:
            # Nothing shown yet may mean nothing shown, or text in flight to the client.
            assert done.reason in (Reason.STOP, Reason.WORKER_LOST)
        else:
            assert done.reason is Reason.STOP and done.answer == "".join(tokens).strip()
    # Nothing but the victim's turns that had shown text was cut short.
    assert reasons["worker_lost"] <= len(lost_with_text) + len(lost_without)
    assert reasons["stop"] + reasons["worker_lost"] == n_turns
    # A re-run turn reads as one stream (checked above); and at least one was re-run.
    rerun = [n for n in range(n_turns) if stream_ids[n] in lost_without and n % 2]
    assert any(check_stream(seen[n]).reason is Reason.STOP for n in rerun)
    # Every stream, replayed through the other gateway, is the very same sequence.
    async with asyncio.timeout(GUARD_S):
        for n in range(0, n_turns, 7):
            stream_id = stream_ids[n]
            assert stream_id is not None
            again = await replay(gateways[(n + 1) % 2], stream_id)
            assert [orjson.dumps(e, default=str) for e in again] == [
                orjson.dumps(e, default=str) for e in seen[n]
            ]


class Reader:
    """One SSE response read bit by bit through a single iterator (abandoning an httpx byte
    iterator closes the connection, which would stop the turn as ``client_gone``)."""

    def __init__(self, response: httpx.Response, events: list[Event] | None = None) -> None:
        self.events: list[Event] = [] if events is None else events
        self._chunks = response.aiter_bytes()
        self._decoder = SSEDecoder()

    async def until_text(self) -> None:
        while not any(isinstance(e, TextDelta) for e in self.events):
            if not await self._more():
                raise AssertionError(f"the stream ended before any text: {self.events}")

    async def until_started(self) -> None:
        """Until ``start``: a worker has taken the turn."""
        while not self.events:
            if not await self._more():
                raise AssertionError("the stream ended before it started")

    async def to_end(self) -> list[Event]:
        while await self._more():
            pass
        return self.events

    async def _more(self) -> bool:
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            return False
        for message in self._decoder.feed(chunk):
            if message.data:
                self.events.append(decode_event(message.data))
        return True


HANG = {"tokens": ["so ", "far", "never"], "fault": {"kind": "hang", "at": 2}}


async def metric(process: Process, name: str) -> float:
    async with client(process) as http:
        text = (await http.get("/metrics")).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


async def test_a_cancel_sent_to_one_gateway_stops_the_turn_behind_another(
    cluster: Cluster,
) -> None:
    gateway_a, gateway_b = await cluster.gateway("gateway-a"), await cluster.gateway("gateway-b")
    worker = await cluster.worker("worker-1")
    events: list[Event] = []
    async with asyncio.timeout(GUARD_S), client(gateway_b) as http_b, client(gateway_a) as http_a:
        body = {"prompt": "x", "script": HANG}
        async with http_b.stream("POST", "/v1/streams", json=body) as response:
            stream_id = response.headers["x-tokenwire-stream-id"]
            reader = Reader(response, events)
            await reader.until_text()
            cancelled = await http_a.post(f"/v1/streams/{stream_id}/cancel")
            assert cancelled.status_code == 200 and cancelled.json()["cancelled"] is True
            await reader.to_end()
    done = check_stream(events)
    assert done.reason is Reason.CANCELLED and done.partial and done.answer == "so far"
    # The upstream call on the worker was aborted, not left to run.
    assert await metric(worker, 'tokenwire_upstream_aborts_total{provider="scripted"}') == 1


async def test_a_turn_cancelled_while_queued_never_reaches_the_upstream(cluster: Cluster) -> None:
    gateway_a, gateway_b = await cluster.gateway("gateway-a"), await cluster.gateway("gateway-b")
    worker = await cluster.worker("worker-1", concurrency=1)
    async with asyncio.timeout(GUARD_S), client(gateway_a) as http_a, client(gateway_b) as http_b:
        body = {"prompt": "x", "script": HANG, "background": True}
        busy = (await http_a.post("/v1/streams", json=body)).json()
        queued = (
            await http_a.post(
                "/v1/streams",
                json={"prompt": "y", "script": {"tokens": ["never"]}, "background": True},
            )
        ).json()
        # Stopped through the other gateway while no worker has it yet.
        assert (await http_b.post(f"/v1/streams/{queued['stream_id']}/cancel")).json()["cancelled"]
        assert (await http_b.post(f"/v1/streams/{busy['stream_id']}/cancel")).json()["cancelled"]
        events: list[Event] = []
        async with http_b.stream("GET", f"/v1/streams/{queued['stream_id']}/events") as response:
            await read_events(response, events)
    done = check_stream(events)
    assert done.reason is Reason.CANCELLED and not any(e.type == "text.delta" for e in events)
    # Only the busy turn's call was ever started (and aborted); the queued one never was.
    assert await metric(worker, 'tokenwire_upstream_aborts_total{provider="scripted"}') == 1
    assert await metric(worker, "tokenwire_provider_attempts_total") == 0


async def test_a_provider_limit_holds_across_worker_processes(cluster: Cluster) -> None:
    cluster.config += '\n[providers.scripted]\nkind = "scripted"\nconcurrency = 1\n'
    gateway = await cluster.gateway()
    # One turn at a time per worker: the second turn goes to the other worker, where only
    # the shared budget can hold it back.
    await cluster.worker("worker-1", concurrency=1)
    await cluster.worker("worker-2", concurrency=1)
    first: list[Event] = []
    second: list[Event] = []
    async with asyncio.timeout(GUARD_S), client(gateway) as http:
        async with http.stream("POST", "/v1/streams", json={"prompt": "a", "script": HANG}) as one:
            first_id = one.headers["x-tokenwire-stream-id"]
            reader_one = Reader(one, first)
            await reader_one.until_text()
            body = {"prompt": "b", "script": {"tokens": ["b1 ", "b2"]}}
            async with http.stream("POST", "/v1/streams", json=body) as two:
                reader_two = Reader(two, second)
                await reader_two.until_started()
                waiting = asyncio.ensure_future(reader_two.until_text())
                store = aioredis.from_url(cluster.redis.url)
                try:
                    # Both turns are on workers now, one per worker...
                    active = await store.hgetall("tw:active")
                    workers = {orjson.loads(v)["worker"] for v in active.values()}
                    assert workers == {"worker-1", "worker-2"}, active
                finally:
                    await store.aclose()
                # ...and the second shows nothing while the first holds the only slot (a
                # bounded look: a slot wrongly granted shows text within milliseconds).
                done, _ = await asyncio.wait({waiting}, timeout=1.5)
                assert not done, second
                await http.post(f"/v1/streams/{first_id}/cancel")
                await waiting  # the slot is free: the second turn goes
                await reader_two.to_end()
            await reader_one.to_end()
    assert check_stream(first).reason is Reason.CANCELLED
    assert check_stream(second).answer == "b1 b2"


@pytest.mark.parametrize("death", ["killed", "stopped"])
async def test_the_clients_of_a_gateway_that_went_away_resume_on_another(
    cluster: Cluster, death: str
) -> None:
    """SIGKILL (a crash) or SIGTERM (a rolling restart): either way the turn goes on, on its
    worker; a gateway leaving is not its client leaving."""
    gateway_a, gateway_b = await cluster.gateway("gateway-a"), await cluster.gateway("gateway-b")
    await cluster.worker("worker-1")
    # ~6 s of turn: far longer than a gateway takes to stop, even on a busy machine (at 1.8 s
    # a slow SIGTERM once let the turn end on gateway A before it was cut off).
    tokens = [f"k{i} " for i in range(60)]
    events: list[Event] = []
    async with asyncio.timeout(GUARD_S):
        async with client(gateway_a) as http_a:
            body = {"prompt": "x", "script": {"tokens": tokens, "delay_ms": 100}}
            async with http_a.stream("POST", "/v1/streams", json=body) as response:
                stream_id = response.headers["x-tokenwire-stream-id"]
                reader = Reader(response, events)
                await reader.until_text()
                if death == "killed":
                    gateway_a.kill()
                else:
                    stopping = asyncio.ensure_future(gateway_a.terminate())
                with contextlib.suppress(httpx.HTTPError):
                    await reader.to_end()
                if death == "stopped":
                    await stopping
        assert events and events[-1].type != "done"  # cut off mid-turn
        # The client reconnects to the other gateway from the last event it has.
        async with client(gateway_b) as http_b:
            headers = {"Last-Event-ID": str(events[-1].seq)}
            path = f"/v1/streams/{stream_id}/events"
            async with http_b.stream("GET", path, headers=headers) as response:
                assert response.status_code == 200
                rest = await Reader(response).to_end()
    done = check_stream(events + rest)  # no gap, no duplicate
    assert done.reason is Reason.STOP and done.answer == "".join(tokens).strip()


async def test_a_retried_post_joins_its_turn_whichever_gateway_it_reaches(cluster: Cluster) -> None:
    gateway_a, gateway_b = await cluster.gateway("gateway-a"), await cluster.gateway("gateway-b")
    await cluster.worker("worker-1")
    body = {"prompt": "x", "script": {"tokens": ["one ", "turn"]}, "background": True}
    headers = {"Idempotency-Key": "order-42"}
    async with asyncio.timeout(GUARD_S), client(gateway_a) as http_a, client(gateway_b) as http_b:
        first = await http_a.post("/v1/streams", json=body, headers=headers)
        retry = await http_b.post("/v1/streams", json=body, headers=headers)
        other = await http_b.post("/v1/streams", json={**body, "prompt": "y"}, headers=headers)
        assert first.status_code == retry.status_code == 202
        assert retry.json()["stream_id"] == first.json()["stream_id"] and retry.json()["joined"]
        assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_conflict"
        events = await replay(gateway_b, first.json()["stream_id"])
    assert check_stream(events).answer == "one turn"


async def test_an_ai_sdk_chat_reconnects_through_another_gateway(cluster: Cluster) -> None:
    gateway_a, gateway_b = await cluster.gateway("gateway-a"), await cluster.gateway("gateway-b")
    await cluster.worker("worker-1")
    body = {
        "id": "chat-7",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        "script": HANG,
    }
    async with asyncio.timeout(GUARD_S), client(gateway_a) as http_a, client(gateway_b) as http_b:
        async with http_a.stream("POST", "/v1/ai-sdk/chat", json=body) as started:
            assert started.status_code == 200
            stream_id = started.headers["x-tokenwire-stream-id"]
            async with http_b.stream("GET", "/v1/ai-sdk/chat/chat-7/stream") as again:
                assert again.status_code == 200
                assert again.headers["x-tokenwire-stream-id"] == stream_id
            assert (await http_b.post(f"/v1/streams/{stream_id}/cancel")).json()["cancelled"]
        unknown = await http_b.get("/v1/ai-sdk/chat/another-chat/stream")
        assert unknown.status_code == 204


async def test_a_provider_rate_limit_holds_across_worker_processes(cluster: Cluster) -> None:
    # Two requests a minute for the whole cluster: a bucket of two, refilled one per 30 s.
    cluster.config += '\n[providers.scripted]\nkind = "scripted"\nrpm = 2\n'
    gateway = await cluster.gateway()
    await cluster.worker("worker-1", concurrency=1)
    await cluster.worker("worker-2", concurrency=1)
    async with asyncio.timeout(GUARD_S), client(gateway) as http:
        for n in range(2):  # one on each worker (each takes one turn at a time)
            body = {"prompt": f"{n}", "script": {"tokens": ["ok"]}}
            async with http.stream("POST", "/v1/streams", json=body) as response:
                assert response.status_code == 200, await response.aread()
                assert check_stream(await Reader(response).to_end()).answer == "ok"
        body = {"prompt": "third", "script": {"tokens": ["late"]}}
        async with http.stream("POST", "/v1/streams", json=body) as third:
            reader = Reader(third)
            await reader.until_started()  # a worker has it...
            reading = asyncio.ensure_future(reader.to_end())
            # ...and holds it back: the cluster's budget is spent (a bounded look: a request
            # wrongly admitted shows its text within milliseconds).
            done, _ = await asyncio.wait({reading}, timeout=1.5)
            assert not done and not any(isinstance(e, TextDelta) for e in reader.events)
            stream_id = third.headers["x-tokenwire-stream-id"]
            assert (await http.post(f"/v1/streams/{stream_id}/cancel")).json()["cancelled"]
            ended = check_stream(await reading)
    assert ended.reason is Reason.CANCELLED and ended.answer == ""


async def test_a_turn_that_keeps_losing_its_workers_is_not_run_again(cluster: Cluster) -> None:
    gateway = await cluster.gateway()
    async with asyncio.timeout(GUARD_S), client(gateway) as http:
        body = {"prompt": "x", "script": {"tokens": ["never"]}, "background": True}
        stream_id = (await http.post("/v1/streams", json=body)).json()["stream_id"]
        # Four workers took the job and died before showing anything (a ghost consumer
        # stands for them: each hand-over counts a delivery).
        store = aioredis.from_url(cluster.redis.url)
        with contextlib.suppress(Exception):
            await store.xgroup_create("tw:jobs", "workers", id="0", mkstream=True)
        (_key, [(entry_id, _fields)]), *_ = await store.xreadgroup(
            "workers", "ghost", {"tw:jobs": ">"}, count=1
        )
        for _ in range(3):
            await store.xclaim("tw:jobs", "workers", "ghost", 0, [entry_id])
        await store.aclose()
        worker = await cluster.worker("worker-1")
        events = await replay(gateway, stream_id)
    error = events[-1]
    assert [e.type for e in events] == ["start", "error"]
    assert isinstance(error, Error) and error.code == "worker_lost" and not error.retryable
    assert await metric(worker, 'tokenwire_worker_takeovers_total{outcome="given_up"}') == 1
    assert await metric(worker, "tokenwire_provider_attempts_total") == 0


async def test_the_active_turn_limit_holds_for_the_whole_cluster(cluster: Cluster) -> None:
    cluster.config += "\n[limits]\nmax_active_turns = 2\n"
    gateway_a, gateway_b = await cluster.gateway("gateway-a"), await cluster.gateway("gateway-b")
    body = {"prompt": "x", "script": {"tokens": ["ok"]}, "background": True}
    async with asyncio.timeout(GUARD_S), client(gateway_a) as http_a, client(gateway_b) as http_b:
        # No worker yet: the turns wait in the queue, and count against the limit.
        first = await http_a.post("/v1/streams", json=body)
        second = await http_b.post("/v1/streams", json=body)
        assert first.status_code == second.status_code == 202
        keyed = {"Idempotency-Key": "k1"}
        refused = await http_a.post("/v1/streams", json=body, headers=keyed)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
        assert float(refused.headers["retry-after"]) > 0
        await cluster.worker("worker-1")
        for queued in (first, second):
            assert check_stream(await replay(gateway_b, queued.json()["stream_id"])).answer == "ok"
        # Room again (a job leaves the queue just after its `done`: a few tries at most); the
        # refused request's key did not stick, so the retry starts the turn.
        for _ in range(100):
            again = await http_b.post("/v1/streams", json=body, headers=keyed)
            if again.status_code != 503:
                break
            await asyncio.sleep(0.05)
        assert again.status_code == 202 and not again.json()["joined"]


async def test_records_of_a_turn_taken_over_are_written_once(
    cluster: Cluster, database_url: str
) -> None:
    """With a shared store: the record of a turn re-run after its worker died is the re-run's,
    and a turn ended for a lost worker is recorded ``worker_lost``."""
    cluster.store_url = database_url
    gateway = await cluster.gateway()
    first = await cluster.worker("worker-1", concurrency=10)
    async with asyncio.timeout(GUARD_S), client(gateway) as http:
        shown_body = {"prompt": "a", "script": {"tokens": ["x "] * 50, "delay_ms": 100}}
        quiet_body = {"prompt": "b", "script": {"tokens": ["y"], "first_delay_ms": 60_000}}
        async with (
            http.stream("POST", "/v1/streams", json=shown_body) as shown_response,
            http.stream("POST", "/v1/streams", json=quiet_body) as quiet_response,
        ):
            shown_reader, quiet_reader = Reader(shown_response), Reader(quiet_response)
            await shown_reader.until_text()
            await quiet_reader.until_started()
            first.kill()
            await cluster.worker("worker-2", concurrency=10)
            shown_done = check_stream(await shown_reader.to_end())
            quiet_id = quiet_response.headers["x-tokenwire-stream-id"]
            # The re-run waits its full first delay again: cancel it rather than wait.
            assert (await http.post(f"/v1/streams/{quiet_id}/cancel")).json()["cancelled"]
            quiet_done = check_stream(await quiet_reader.to_end())
    assert shown_done.reason is Reason.WORKER_LOST and quiet_done.reason is Reason.CANCELLED
    store = Store(database_url)
    await store.open()
    try:
        shown_record = await store.get_turn(shown_done.stream_id)
        quiet_record = await store.get_turn(quiet_done.stream_id)
    finally:
        await store.aclose()
    assert shown_record is not None and quiet_record is not None
    assert shown_record["reason"] == "worker_lost" and shown_record["partial"]
    assert shown_record["answer"] == shown_done.answer
    assert quiet_record["reason"] == "cancelled"
