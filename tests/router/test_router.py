"""Router.dispatch: concurrency, isolation, timeouts and captured failures, with real handlers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.router.records import make_record
from tokenwire.router import (
    FieldEquals,
    Router,
    RouteResult,
    RouterMetrics,
    idempotency_key,
)

GUARD_S = 10  # generous: only catches a dispatch that hangs


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    async with Router(default_timeout_s=5) as r:
        yield r


def test_record_shape() -> None:
    record = make_record()
    assert record["type"] == "done"
    assert record["stream_id"] == "s1"
    assert record["reason"] == "stop"
    assert record["structured"]["data"]["sentiment"] == "negative"
    assert record["metadata"] == {"tenant": "acme"}
    assert record["conversation_id"] == "c1"
    assert idempotency_key("s1", "audit") == "s1:audit"


async def test_matching_routes_run_and_results_come_in_registration_order(router: Router) -> None:
    seen: dict[str, dict[str, Any]] = {}

    async def remember(record: dict[str, Any]) -> None:
        seen["async"] = record

    def remember_sync(record: dict[str, Any]) -> None:
        seen["sync"] = record

    router.route("a", None, remember)
    router.route("skipped", FieldEquals(field="metadata.tenant", equals="other"), remember)
    router.route("b", lambda r: r["reason"] == "stop", remember_sync)

    results = await router.dispatch(make_record())

    assert [r.route for r in results] == ["a", "b"]
    assert all(r.ok and r.outcome == "ok" and r.attempts == 1 for r in results)
    assert [r.idempotency_key for r in results] == ["s1:a", "s1:b"]
    assert seen["async"]["answer"] == seen["sync"]["answer"] == "The answer"


async def test_failing_and_hanging_routes_do_not_touch_the_others(router: Router) -> None:
    delivered: list[str] = []
    hang_started = asyncio.Event()

    async def ok(record: dict[str, Any]) -> None:
        delivered.append(record["stream_id"])

    async def boom(record: dict[str, Any]) -> None:
        raise RuntimeError("consumer crashed")

    async def hang(record: dict[str, Any]) -> None:
        hang_started.set()
        await asyncio.Event().wait()

    router.route("boom", None, boom)
    router.route("hang", None, hang, timeout_s=0.2)
    router.route("ok", None, ok)

    async with asyncio.timeout(GUARD_S):
        results = {r.route: r for r in await router.dispatch(make_record())}

    assert hang_started.is_set()
    assert delivered == ["s1"]
    assert results["ok"].ok
    assert results["boom"].outcome == "error"
    assert results["boom"].error == "RuntimeError: consumer crashed"
    assert results["hang"].outcome == "timeout"
    assert results["hang"].error == "timed out after 0.2s"
    assert results["hang"].duration_ms >= 200
    assert not results["hang"].ok and not results["boom"].ok
    assert router.outcomes["hang", "timeout"] == 1


async def test_a_handler_that_ignores_cancellation_is_abandoned() -> None:
    release = asyncio.Event()
    cancelled = asyncio.Event()

    async def stubborn(record: dict[str, Any]) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            await release.wait()  # swallows the cancel and keeps going

    async with Router() as router:
        router.route("stubborn", None, stubborn, timeout_s=0.1)
        async with asyncio.timeout(GUARD_S):
            [result] = await router.dispatch(make_record())
        assert result.outcome == "timeout"
        await cancelled.wait()
        release.set()


async def test_sync_handlers_run_in_threads_and_their_errors_are_captured(router: Router) -> None:
    threads: list[str] = []
    unblock = threading.Event()

    def record_thread(record: dict[str, Any]) -> None:
        threads.append(threading.current_thread().name)

    def fail(record: dict[str, Any]) -> None:
        raise ValueError("bad row")

    def blocked(record: dict[str, Any]) -> None:
        unblock.wait(GUARD_S)

    router.route("thread", None, record_thread)
    router.route("fail", None, fail)
    router.route("blocked", None, blocked, timeout_s=0.1)
    try:
        results = {r.route: r for r in await router.dispatch(make_record())}
    finally:
        unblock.set()

    assert threads and threads[0].startswith("tokenwire-route")
    assert results["thread"].ok
    assert results["fail"].error == "ValueError: bad row"
    assert results["blocked"].outcome == "timeout"


async def test_each_route_gets_its_own_copy_of_the_record(router: Router) -> None:
    original = make_record()
    seen: list[str] = []

    def vandal(record: dict[str, Any]) -> None:
        record["answer"] = "changed"
        record["structured"]["data"].clear()

    async def reader(record: dict[str, Any]) -> None:
        seen.append(record["structured"]["data"]["sentiment"])

    router.route("vandal", None, vandal)
    router.route("reader", None, reader)
    await router.dispatch(original)
    await router.dispatch(original)

    assert seen == ["negative", "negative"]
    assert original["answer"] == "The answer"


async def test_dispatch_never_raises_for_a_route_fault(router: Router) -> None:
    def bad_condition(record: Any) -> bool:
        raise KeyError("nope")

    async def cancels_itself(record: dict[str, Any]) -> None:
        raise asyncio.CancelledError

    router.route("bad_condition", bad_condition, lambda r: None)
    router.route("cancels_itself", None, cancels_itself)
    router.route("fine", None, lambda r: None)

    results = {r.route: r for r in await router.dispatch(make_record())}
    assert results["bad_condition"].outcome == "error"
    assert results["bad_condition"].attempts == 0
    assert results["cancels_itself"].outcome == "error"
    assert results["fine"].ok

    # A record that cannot be copied as JSON fails the routes it matched, not the caller.
    unjsonable = await router.dispatch({"stream_id": "s2", "answer": object()})
    assert [r.outcome for r in unjsonable] == ["error", "error", "error"]
    assert unjsonable[2].error is not None and unjsonable[2].error.startswith("TypeError")


async def test_observers_and_prometheus_metrics() -> None:
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    observed: list[RouteResult] = []

    def broken_observer(result: RouteResult) -> None:
        raise RuntimeError("observer bug")

    async with Router() as router:
        router.observe(metrics.observe)
        router.observe(broken_observer)
        router.observe(observed.append)
        router.route("ok", None, lambda r: None)
        router.route("err", None, lambda r: 1 / 0)
        await router.dispatch(make_record())
        await router.dispatch(make_record("s2"))

    assert len(observed) == 4
    value = registry.get_sample_value
    assert value("tokenwire_route_results_total", {"route": "ok", "outcome": "ok"}) == 2
    assert value("tokenwire_route_results_total", {"route": "err", "outcome": "error"}) == 2
    assert value("tokenwire_route_attempts_total", {"route": "ok"}) == 2
    assert value("tokenwire_route_duration_seconds_count", {"route": "ok"}) == 2


async def test_registration_errors_and_closed_router() -> None:
    router = Router()
    router.route("audit", None, lambda r: None)
    for name in ("audit", "has space", "", "x" * 65, "a:b"):
        with pytest.raises(ValueError):
            router.route(name, None, lambda r: None)
    with pytest.raises(ValueError):
        router.route("zero", None, lambda r: None, timeout_s=0)
    await router.aclose()
    await router.aclose()  # idempotent
    [result] = await router.dispatch(make_record())
    assert result.error == "router is closed"
    assert result.to_dict()["outcome"] == "error"
