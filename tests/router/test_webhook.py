"""The webhook sink against a real loopback receiver: retries, idempotency, signatures."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.support.receiver import Reply, WebhookReceiver
from tokenwire.router import DeliveryError, JsonlSink, Router, WebhookSink, sign, verify_signature
from tokenwire.router.webhook import parse_retry_after

SECRET = b"s3cret"
GUARD_S = 10


def record(stream_id: str) -> dict[str, Any]:
    return {"stream_id": stream_id, "answer": "hi\n\ndata: not an event", "status": "completed"}


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(secret=SECRET) as rx:
        yield rx


def sink_for(rx: WebhookReceiver, **options: Any) -> WebhookSink:
    options.setdefault("backoff_initial_s", 0)
    options.setdefault("secret", SECRET)
    return WebhookSink(rx.url, **options)


async def test_fails_twice_then_succeeds_delivered_once_per_key(receiver: WebhookReceiver) -> None:
    async with Router() as router:
        router.route("hook", None, sink_for(receiver))
        stream_ids = ["s1", "s2", "s3"]
        for stream_id in stream_ids:
            receiver.fail_first(2)
            async with asyncio.timeout(GUARD_S):
                [result] = await router.dispatch(record(stream_id))
            assert result.ok, result
            assert result.attempts == 3
            assert result.idempotency_key == f"{stream_id}:hook"

    assert len(receiver.requests) == 9
    assert sorted(receiver.accepted) == ["s1:hook", "s2:hook", "s3:hook"]
    assert all(len(log) == 1 for log in receiver.accepted.values())
    # Every attempt of one delivery carries the same key and the same body, numbered.
    first = receiver.requests[:3]
    assert {r.key for r in first} == {"s1:hook"}
    assert [r.attempt for r in first] == ["1", "2", "3"]
    assert len({r.body for r in first}) == 1
    assert orjson.loads(first[0].body) == record("s1")
    assert all(r.signature_valid for r in receiver.requests)
    assert first[0].headers["Content-Type"] == "application/json"


async def test_signature_verifies_with_the_secret(receiver: WebhookReceiver) -> None:
    async with sink_for(receiver, headers={"X-Extra": "yes"}) as sink:
        await sink.deliver(record("s1"), "s1:hook")
    [got] = receiver.requests
    assert got.signature_valid is True
    assert got.headers["X-Extra"] == "yes"
    timestamp = got.headers["X-Tokenwire-Timestamp"]
    signature = got.headers["X-Tokenwire-Signature"]
    assert verify_signature(SECRET, got.body, timestamp, signature)
    assert not verify_signature(b"other", got.body, timestamp, signature)
    assert not verify_signature(SECRET, got.body + b" ", timestamp, signature)
    assert not verify_signature(SECRET, got.body, timestamp, signature, now=time.time() + 3600)
    assert not verify_signature(SECRET, got.body, "yesterday", signature)
    assert sign(SECRET, timestamp, got.body) == signature


async def test_a_wrong_secret_is_refused_and_not_retried(receiver: WebhookReceiver) -> None:
    async with sink_for(receiver, secret=b"wrong") as sink:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(record("s1"), "s1:hook")
    assert caught.value.status == 401
    assert caught.value.attempts == 1
    assert len(receiver.requests) == 1
    assert not receiver.accepted


@pytest.mark.parametrize("status", [400, 404, 409, 422])
async def test_4xx_is_final(receiver: WebhookReceiver, status: int) -> None:
    receiver.fail_first(1, status=status)
    async with Router() as router:
        router.route("hook", None, sink_for(receiver))
        [result] = await router.dispatch(record("s1"))
    assert result.outcome == "error"
    assert result.attempts == 1
    assert result.error == f"DeliveryError: webhook refused the delivery: HTTP {status}"
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("status", [408, 429, 502, 503])
async def test_retryable_statuses(receiver: WebhookReceiver, status: int) -> None:
    receiver.fail_first(1, status=status)
    attempts: list[int] = []
    async with sink_for(receiver) as sink:
        await sink.deliver(record("s1"), "s1:hook", on_attempt=attempts.append)
    assert attempts == [1, 2]
    assert len(receiver.accepted["s1:hook"]) == 1


async def test_retry_after_is_honoured_but_capped(receiver: WebhookReceiver) -> None:
    # The receiver asks for an hour; the cap keeps the wait tiny, so the guard never trips.
    receiver.push(Reply(status=429, retry_after="3600"))
    async with sink_for(receiver, retry_after_max_s=0.01) as sink:
        async with asyncio.timeout(GUARD_S):
            await sink.deliver(record("s1"), "s1:hook")
    assert [r.status for r in receiver.requests] == [429, 200]


async def test_gives_up_after_max_attempts(receiver: WebhookReceiver) -> None:
    receiver.fail_first(5, status=503)
    async with sink_for(receiver, max_attempts=3) as sink:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(record("s1"), "s1:hook")
    assert caught.value.attempts == 3
    assert caught.value.retryable
    assert caught.value.status == 503
    assert len(receiver.requests) == 3


async def test_connection_errors_are_retried() -> None:
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempts: list[int] = []
    async with WebhookSink(
        f"http://127.0.0.1:{port}/hook", max_attempts=3, backoff_initial_s=0
    ) as sink:
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(record("s1"), "s1:hook", on_attempt=attempts.append)
    assert attempts == [1, 2, 3]
    assert caught.value.retryable and caught.value.status is None
    assert "ConnectError" in str(caught.value)


async def test_a_request_that_hangs_times_out_and_is_retried(receiver: WebhookReceiver) -> None:
    receiver.push(Reply(hang=True))
    async with sink_for(receiver, request_timeout_s=0.2) as sink:
        async with asyncio.timeout(GUARD_S):
            await sink.deliver(record("s1"), "s1:hook")
    assert [r.attempt for r in receiver.requests] == ["1", "2"]
    assert len(receiver.accepted["s1:hook"]) == 1


async def test_a_hanging_receiver_times_out_the_route_only(
    receiver: WebhookReceiver, tmp_path: Any
) -> None:
    receiver.push(Reply(hang=True))
    audit = tmp_path / "audit.jsonl"
    async with Router() as router:
        # Long enough for the request to reach the receiver on a loaded machine (asserted
        # below: the timeout must come from the hang, not from a request that never arrived).
        router.route("hook", None, sink_for(receiver), timeout_s=2.0)
        router.route("audit", None, JsonlSink(audit))
        async with asyncio.timeout(GUARD_S):
            results = {r.route: r for r in await router.dispatch(record("s1"))}
    assert receiver.hanging.is_set()
    assert results["hook"].outcome == "timeout"
    assert results["hook"].attempts == 1
    assert results["audit"].ok
    assert orjson.loads(audit.read_bytes())["idempotency_key"] == "s1:audit"


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=now) == 30.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now=now) == 0.0


async def test_retry_delays_grow_with_jitter_and_respect_caps() -> None:
    sink = WebhookSink("http://127.0.0.1:1/", backoff_initial_s=1, backoff_max_s=4)
    for _ in range(50):
        assert 0.5 <= sink._delay(1, None) <= 1
        assert 1 <= sink._delay(2, None) <= 2
        assert 2 <= sink._delay(5, None) <= 4
        assert sink._delay(1, 3600) == sink.retry_after_max_s
    await sink.aclose()
