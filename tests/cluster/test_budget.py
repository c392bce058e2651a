"""SharedBudget against a real redis-server: every limit holds across clients (standing for
processes), a dead holder's slot comes back with its lease, and cancellation takes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support.redis import RedisServer
from tokenwire.cluster.budget import SharedBudget, SharedGrant

STILL_BLOCKED_S = 0.3
"""How long a waiter must stay pending to count as blocked: many polls at POLL_S, and never a
bound on how fast anything must happen."""
POLL_S = 0.02
GUARD_S = 10.0
"""Only keeps a broken test from hanging; nothing is expected to take nearly this long."""

Clients = Callable[[], aioredis.Redis]


@pytest.fixture
async def clients(redis: RedisServer) -> AsyncIterator[Clients]:
    """A factory of separate clients of the test's server: each stands for one process."""
    made: list[aioredis.Redis] = []

    def make() -> aioredis.Redis:
        client = aioredis.from_url(redis.url)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def budget(client: aioredis.Redis, **limits: Any) -> SharedBudget:
    limits.setdefault("poll_max_s", POLL_S)
    return SharedBudget(client, "acme", **limits)


async def still_blocked(task: asyncio.Task[Any]) -> None:
    done, _ = await asyncio.wait({task}, timeout=STILL_BLOCKED_S)
    assert not done, "the waiter was admitted while it should still be blocked"


async def level(client: aioredis.Redis, key: str) -> float | None:
    raw = await client.hget(key, "level")
    return None if raw is None else float(raw)


# -- concurrency ---------------------------------------------------------------------------


async def test_a_slot_is_shared_by_processes(clients: Clients) -> None:
    first, second = budget(clients(), concurrency=1), budget(clients(), concurrency=1)
    held = await first.acquire(tokens=0, holder="w1")
    assert held.waited_s == 0.0
    waiting = asyncio.create_task(second.acquire(tokens=0, holder="w2"))
    await still_blocked(waiting)
    assert await second.try_acquire(tokens=0, holder="w3") is None

    await held.release()
    admitted = await asyncio.wait_for(waiting, GUARD_S)
    assert admitted.waited_s > 0
    assert admitted.holder.startswith("w2/")
    assert await first.active() == 1
    await admitted.release()
    assert await first.active() == 0


async def test_one_process_holder_name_never_shares_a_slot(clients: Clients) -> None:
    shared = budget(clients(), concurrency=2)
    one = await shared.acquire(tokens=0, holder="worker")
    two = await shared.acquire(tokens=0, holder="worker")
    assert one.holder != two.holder
    assert await shared.try_acquire(tokens=0, holder="worker") is None
    await one.release()
    await one.release()  # idempotent: frees one slot, not two
    assert await shared.active() == 1


async def test_a_dead_holder_frees_its_slot_after_the_lease(clients: Clients) -> None:
    dead = budget(clients(), concurrency=1, lease_s=0.3)
    alive = budget(clients(), concurrency=1, lease_s=0.3)
    orphan = await dead.acquire(tokens=0, holder="crashed")  # never released nor renewed

    grant = await asyncio.wait_for(alive.acquire(tokens=0, holder="alive"), GUARD_S)
    assert grant.waited_s > 0
    assert await alive.active() == 1
    assert await orphan.keepalive() is False  # its lease lapsed: the slot is someone else's


async def test_keepalive_extends_the_lease(clients: Clients) -> None:
    client = clients()
    shared = budget(client, concurrency=1, lease_s=30)
    grant = await shared.acquire(tokens=0, holder="w")
    holders = shared.keys[0]
    before = await client.zscore(holders, grant.holder)
    expiry_before = await client.pexpiretime(holders)
    assert await grant.keepalive() is True
    assert await client.zscore(holders, grant.holder) > before
    assert await client.pexpiretime(holders) >= expiry_before
    await grant.release()
    assert await grant.keepalive() is False


# -- per-minute budgets --------------------------------------------------------------------


async def test_rpm_is_shared_and_refills(clients: Clients) -> None:
    # 120 rpm: a burst of 120, then one more every half second.
    first, second = budget(clients(), rpm=120), budget(clients(), rpm=120)
    burst = [await b.try_acquire(tokens=0, holder="w") for _ in range(60) for b in (first, second)]
    assert all(isinstance(grant, SharedGrant) for grant in burst)
    assert await first.try_acquire(tokens=0, holder="late") is None
    assert await second.try_acquire(tokens=0, holder="late") is None

    refilled = await asyncio.wait_for(second.acquire(tokens=0, holder="patient"), GUARD_S)
    assert refilled.waited_s > 0  # admitted by the refill, not at once
    for grant in burst:
        await grant.release()  # frees their slots; requests made stay spent


async def test_rpm_small_budget_admits_exactly_its_burst(clients: Clients) -> None:
    first, second = budget(clients(), rpm=3), budget(clients(), rpm=3)
    assert await first.try_acquire(tokens=0, holder="a") is not None
    assert await second.try_acquire(tokens=0, holder="b") is not None
    assert await first.try_acquire(tokens=0, holder="c") is not None
    assert await second.try_acquire(tokens=0, holder="d") is None
    assert await first.try_acquire(tokens=0, holder="d") is None


async def test_tpm_debt_blocks_and_a_refund_unblocks(clients: Clients) -> None:
    client = clients()
    first, second = budget(client, tpm=600), budget(clients(), tpm=600)
    grant = await first.acquire(tokens=100, holder="a")
    assert await level(client, first.keys[2]) == pytest.approx(500, abs=1)

    await grant.used(1200)  # an under-estimate: 600 tokens of debt
    assert await level(client, first.keys[2]) == pytest.approx(-600, abs=1)
    assert await second.try_acquire(tokens=1, holder="b") is None

    await grant.used(0)  # never reached the provider: all 1200 back, capped at a full bucket
    assert await level(client, first.keys[2]) == pytest.approx(600)
    assert await second.try_acquire(tokens=600, holder="b") is not None


async def test_a_cost_above_the_budget_waits_for_a_full_bucket(clients: Clients) -> None:
    client = clients()
    shared = budget(client, tpm=600)
    big = await shared.try_acquire(tokens=1000, holder="big")  # full bucket: payable, in debt
    assert big is not None
    assert await level(client, shared.keys[2]) == pytest.approx(-400, abs=1)
    assert await shared.try_acquire(tokens=1, holder="small") is None
    await big.used(400)
    assert await shared.try_acquire(tokens=1000, holder="again") is None  # not full: 200 spent
    await big.used(0)
    assert await shared.try_acquire(tokens=1000, holder="again") is not None


async def test_admission_takes_all_limits_or_none(clients: Clients) -> None:
    client = clients()
    shared = budget(client, concurrency=5, rpm=60, tpm=100)
    assert await shared.try_acquire(tokens=80, holder="a") is not None
    rpm_level = await level(client, shared.keys[1])
    assert await shared.try_acquire(tokens=80, holder="b") is None  # the TPM bucket refuses
    assert await shared.active() == 1
    assert await level(client, shared.keys[1]) == rpm_level  # so no request was charged


# -- cancellation, clean-up, keys ----------------------------------------------------------


async def test_cancelling_a_waiter_takes_nothing(clients: Clients) -> None:
    client = clients()
    holder = budget(clients(), concurrency=1, tpm=600)
    waiter = budget(client, concurrency=1, tpm=600)
    held = await holder.acquire(tokens=100, holder="h")
    tpm_before = await level(client, waiter.keys[2])

    task = asyncio.create_task(waiter.acquire(tokens=100, holder="w"))
    await still_blocked(task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await client.zcard(waiter.keys[0]) == 1
    assert await level(client, waiter.keys[2]) == tpm_before

    await held.release()
    assert await waiter.active() == 0


async def test_a_cancelled_attempt_whose_reply_was_lost_is_undone(clients: Clients) -> None:
    client = clients()
    shared = budget(client, concurrency=1, rpm=60, tpm=600)
    ran, lost = asyncio.Event(), asyncio.Event()
    script = shared._acquire_script

    async def reply_lost(**kwargs: Any) -> Any:
        await script(**kwargs)  # the server took everything...
        ran.set()
        await lost.wait()
        raise RedisConnectionError("...and the connection broke before the reply")

    shared._acquire_script = reply_lost  # type: ignore[assignment]
    task = asyncio.create_task(shared.acquire(tokens=100, holder="w"))
    await asyncio.wait_for(ran.wait(), GUARD_S)
    assert await client.zcard(shared.keys[0]) == 1
    task.cancel()
    lost.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await client.zcard(shared.keys[0]) == 0
    assert await level(client, shared.keys[1]) == pytest.approx(60)
    assert await level(client, shared.keys[2]) == pytest.approx(600)


@pytest.mark.parametrize("blocked", [False, True])
async def test_a_cancellation_at_any_point_takes_nothing(clients: Clients, blocked: bool) -> None:
    """Cancel acquire after 0, 1, 2, ... loop iterations, so the cancellation lands before,
    during and after the script round trip: whatever the point, the acquire either returned a
    grant or left the holders and both buckets as they were."""
    client = clients()
    shared = budget(client, concurrency=1, rpm=600, tpm=6000)
    other = budget(clients(), concurrency=1, rpm=600, tpm=6000)
    if blocked:
        await other.acquire(tokens=0, holder="holder")
    full = [600.0, 6000.0]

    async def levels() -> list[float]:
        found = [await level(client, key) for key in shared.keys[1:]]
        return [f if f is not None else c for f, c in zip(found, full, strict=True)]

    before = await levels()
    outcomes = set()
    for iterations in range(40):
        task = asyncio.create_task(shared.acquire(tokens=100, holder="w"))
        for _ in range(iterations):
            await asyncio.sleep(0)
        task.cancel()
        try:
            grant = await task
        except asyncio.CancelledError:
            outcomes.add("cancelled")
            assert await client.zcard(shared.keys[0]) == (1 if blocked else 0)
            # A refill between the two readings can only raise a level (up to full).
            assert all(a >= b for a, b in zip(await levels(), before, strict=True))
        else:
            outcomes.add("admitted")
            assert not blocked
            await grant.release()
            await grant.used(0)
        before = await levels()
    assert "cancelled" in outcomes


async def test_a_retried_admission_is_charged_once(clients: Clients) -> None:
    # The client library retries a command whose connection broke; the script may have run.
    client = clients()
    shared = budget(client, concurrency=2, rpm=60, tpm=600)
    assert await shared._attempt("w/retried", 100) == 0
    assert await shared._attempt("w/retried", 100) == 0
    assert await shared.active() == 1
    assert await level(client, shared.keys[1]) == pytest.approx(59, abs=0.1)
    assert await level(client, shared.keys[2]) == pytest.approx(500, abs=1)


async def test_slot_releases_on_error_and_on_cancellation(clients: Clients) -> None:
    shared = budget(clients(), concurrency=1)
    with pytest.raises(RuntimeError):
        async with shared.slot(tokens=0, holder="w") as grant:
            raise RuntimeError("provider failed")
    assert grant.released
    assert await shared.active() == 0

    entered = asyncio.Event()

    async def call() -> None:
        async with shared.slot(tokens=0, holder="w"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(call())
    await asyncio.wait_for(entered.wait(), GUARD_S)
    assert await shared.active() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await shared.active() == 0


async def test_keys_share_a_cluster_slot_and_expire(clients: Clients) -> None:
    client = clients()
    shared = budget(client, concurrency=2, rpm=60, tpm=600, prefix="tw")
    assert shared.keys == (
        "tw:budget:{acme}:holders",
        "tw:budget:{acme}:rpm",
        "tw:budget:{acme}:tpm",
    )
    grant = await shared.acquire(tokens=60, holder="w")
    for key in shared.keys:
        assert await client.pttl(key) > 0, key
    # A bucket expires when it would be full again (59 of 60 requests: one second away).
    assert await client.pttl(shared.keys[1]) <= 2000
    assert await client.pttl(shared.keys[2]) <= 7000
    await grant.release()
    assert await client.exists(shared.keys[0]) == 0


async def test_without_limits_nothing_touches_redis(clients: Clients) -> None:
    client = clients()
    shared = budget(client)
    assert not shared.limited
    async with shared.slot(tokens=10, holder="w") as grant:
        await grant.used(20)
        assert await grant.keepalive() is True
    assert await client.keys("*") == []
    assert budget(client, tpm=1).limited


async def test_redis_errors_propagate(redis: RedisServer) -> None:
    client = aioredis.from_url(redis.url, retry=Retry(NoBackoff(), 0))
    try:
        shared = budget(client, concurrency=1)
        redis.stop()
        with pytest.raises(RedisConnectionError):
            await shared.acquire(tokens=0, holder="w")
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "limits",
    [
        {"concurrency": 0},
        {"rpm": 0},
        {"tpm": float("inf")},
        {"lease_s": 0},
        {"poll_max_s": -1},
    ],
)
async def test_invalid_limits(clients: Clients, limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SharedBudget(clients(), "acme", **limits)


async def test_negative_tokens_are_refused(clients: Clients) -> None:
    shared = budget(clients(), tpm=600)
    with pytest.raises(ValueError):
        await shared.acquire(tokens=-1, holder="w")
    grant = await shared.acquire(tokens=1, holder="w")
    with pytest.raises(ValueError):
        await grant.used(-1)
