from __future__ import annotations

import asyncio

import pytest

from tokenwire.engine.scheduler import Grant, Priority, ProviderScheduler

INTERACTIVE = Priority.INTERACTIVE
BACKGROUND = Priority.BACKGROUND


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Call:
    """One provider call: queues for a slot, records its admission, holds the slot until told."""

    def __init__(
        self,
        scheduler: ProviderScheduler,
        name: str,
        priority: Priority,
        order: list[str],
        tokens: int = 0,
    ) -> None:
        self.name = name
        self.queued = asyncio.Event()
        self.entered = asyncio.Event()
        self.leave = asyncio.Event()
        self.grant: Grant | None = None
        self.task = asyncio.create_task(self._run(scheduler, priority, order, tokens))

    async def _run(
        self, scheduler: ProviderScheduler, priority: Priority, order: list[str], tokens: int
    ) -> None:
        # Set before entering: the scheduler enqueues in this same step (it does not yield
        # before the call is in its queue), so whoever awaits `queued` resumes after that.
        self.queued.set()
        async with scheduler.slot(priority, tokens=tokens) as grant:
            self.grant = grant
            order.append(self.name)
            self.entered.set()
            await self.leave.wait()

    async def finish(self) -> None:
        self.leave.set()
        await self.task


async def call(
    scheduler: ProviderScheduler,
    name: str,
    priority: Priority,
    order: list[str],
    tokens: int = 0,
) -> Call:
    """Start a call and return once it is queued (or, if it fit, already admitted)."""
    c = Call(scheduler, name, priority, order, tokens)
    await c.queued.wait()
    return c


async def test_interactive_call_is_admitted_at_the_next_release_not_behind_the_queue() -> None:
    scheduler = ProviderScheduler(concurrency=2)
    order: list[str] = []
    async with scheduler.slot(BACKGROUND):  # one of the two slots, held by the test itself
        other = await call(scheduler, "other", BACKGROUND, order)
        backlog = [await call(scheduler, f"b{i}", BACKGROUND, order) for i in range(50)]
        assert order == ["other"]
        assert scheduler.stats().waiting == {INTERACTIVE: 0, BACKGROUND: 50}
        user = await call(scheduler, "user", INTERACTIVE, order)
        assert scheduler.stats().waiting == {INTERACTIVE: 1, BACKGROUND: 50}
    # Leaving the block released the slot, and the release itself (no await since) admitted
    # the interactive call ahead of the 50 queued before it.
    assert scheduler.stats().waiting == {INTERACTIVE: 0, BACKGROUND: 50}
    await user.entered.wait()
    assert order == ["other", "user"]

    await other.finish()
    await user.finish()
    for c in backlog:
        c.leave.set()
    await asyncio.gather(*(c.task for c in backlog))
    assert order[2:] == [f"b{i}" for i in range(50)]  # background: first come, first served
    stats = scheduler.stats()
    assert stats.admitted == {INTERACTIVE: 1, BACKGROUND: 52}
    assert stats.active == 0
    assert stats.waiting == {INTERACTIVE: 0, BACKGROUND: 0}


@pytest.mark.parametrize(
    ("background_waited_s", "expected"),
    [(9.0, ["held", "user", "extract"]), (10.0, ["held", "extract", "user"])],
    ids=["young-background-waits", "aged-background-goes-first"],
)
async def test_aging_promotes_an_old_background_call_ahead_of_a_newer_interactive_one(
    background_waited_s: float, expected: list[str]
) -> None:
    clock = FakeClock()
    scheduler = ProviderScheduler(concurrency=1, aging_s=10.0, clock=clock)
    order: list[str] = []
    held = await call(scheduler, "held", INTERACTIVE, order)
    extract = await call(scheduler, "extract", BACKGROUND, order)
    clock.now += background_waited_s
    user = await call(scheduler, "user", INTERACTIVE, order)

    for c in (held, user, extract):
        c.leave.set()
    await asyncio.gather(held.task, user.task, extract.task)
    assert order == expected
    assert extract.grant is not None
    assert extract.grant.waited_s == background_waited_s
    assert extract.grant.promoted is (expected[1] == "extract")
    assert scheduler.stats().promoted == int(extract.grant.promoted)
    assert scheduler.stats().wait_s == {INTERACTIVE: 0.0, BACKGROUND: background_waited_s}


async def test_aged_background_call_does_not_overtake_an_older_interactive_one() -> None:
    clock = FakeClock()
    scheduler = ProviderScheduler(concurrency=1, aging_s=10.0, clock=clock)
    order: list[str] = []
    held = await call(scheduler, "held", INTERACTIVE, order)
    user = await call(scheduler, "user", INTERACTIVE, order)
    extract = await call(scheduler, "extract", BACKGROUND, order)
    clock.now += 60.0
    for c in (held, user, extract):
        c.leave.set()
    await asyncio.gather(held.task, user.task, extract.task)
    assert order == ["held", "user", "extract"]


async def test_cancelled_waiters_leave_the_queue_and_block_nobody() -> None:
    scheduler = ProviderScheduler(concurrency=1)
    order: list[str] = []
    held = await call(scheduler, "held", BACKGROUND, order)
    b1 = await call(scheduler, "b1", BACKGROUND, order)
    user = await call(scheduler, "user", INTERACTIVE, order)
    b2 = await call(scheduler, "b2", BACKGROUND, order)
    b3 = await call(scheduler, "b3", BACKGROUND, order)

    for c in (user, b2):
        c.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await c.task
    stats = scheduler.stats()
    assert stats.waiting == {INTERACTIVE: 0, BACKGROUND: 2}
    assert stats.cancelled == {INTERACTIVE: 1, BACKGROUND: 1}
    assert stats.active == 1

    for c in (held, b1, b3):
        c.leave.set()
    await asyncio.gather(held.task, b1.task, b3.task)
    assert order == ["held", "b1", "b3"]
    assert scheduler.stats().active == 0


async def test_a_call_cancelled_as_it_is_admitted_gives_its_slot_and_budget_back() -> None:
    clock = FakeClock()
    scheduler = ProviderScheduler(concurrency=1, rpm=2, tpm=100, clock=clock)
    order: list[str] = []
    async with scheduler.slot(INTERACTIVE, tokens=10):
        late = await call(scheduler, "late", BACKGROUND, order, tokens=50)
    # Leaving the block admitted `late` at once (no await since); cancel it before it resumes.
    assert scheduler.stats().waiting[BACKGROUND] == 0
    assert scheduler.stats().active == 1
    late.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late.task
    assert order == []
    assert scheduler.stats().active == 0
    # Its request and its 50 tokens were refunded: a 90-token call fits at once.
    after = await call(scheduler, "after", INTERACTIVE, order, tokens=90)
    assert after.entered.is_set()
    await after.finish()
    assert scheduler.stats().active == 0


async def test_cancelling_a_budget_blocked_head_admits_the_next_call() -> None:
    clock = FakeClock()
    scheduler = ProviderScheduler(tpm=100, clock=clock)
    order: list[str] = []
    async with scheduler.slot(INTERACTIVE, tokens=100):
        pass
    big = await call(scheduler, "big", BACKGROUND, order, tokens=50)
    small = await call(scheduler, "small", BACKGROUND, order, tokens=0)
    assert scheduler.wakeup_at == clock.now + 30.0  # head of line: `small` waits behind `big`
    big.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await big.task
    assert scheduler.stats().waiting[BACKGROUND] == 0  # the cancel's cleanup admitted `small`
    await small.entered.wait()
    assert scheduler.wakeup_at is None
    await small.finish()
    assert order == ["small"]


async def test_rpm_the_call_past_the_budget_waits_for_refill() -> None:
    clock = FakeClock()
    scheduler = ProviderScheduler(rpm=2, clock=clock)
    order: list[str] = []
    for _ in range(2):
        async with scheduler.slot(INTERACTIVE) as grant:
            assert grant.waited_s == 0.0
    third = await call(scheduler, "third", INTERACTIVE, order)
    assert not third.entered.is_set()
    assert scheduler.wakeup_at == clock.now + 30.0  # one request refills in 60 s / 2

    clock.now += 29.5
    scheduler.recheck()
    assert scheduler.stats().waiting[INTERACTIVE] == 1
    clock.now += 0.5
    scheduler.recheck()
    assert scheduler.stats().waiting[INTERACTIVE] == 0
    await third.finish()
    assert third.grant is not None
    assert third.grant.waited_s == 30.0


async def test_tpm_refund_from_used_admits_a_waiting_call_at_once() -> None:
    clock = FakeClock()
    scheduler = ProviderScheduler(tpm=100, clock=clock)
    order: list[str] = []
    first = await call(scheduler, "first", INTERACTIVE, order, tokens=80)
    second = await call(scheduler, "second", BACKGROUND, order, tokens=50)
    assert order == ["first"]
    assert scheduler.wakeup_at == clock.now + 18.0  # 30 tokens short at 100/60 per second
    assert first.grant is not None
    first.grant.used(20)  # 60 tokens back: 80 available
    assert scheduler.stats().waiting[BACKGROUND] == 0  # admitted by the report itself
    await second.entered.wait()
    assert scheduler.wakeup_at is None
    await first.finish()
    await second.finish()


async def test_tpm_usage_above_the_estimate_delays_the_next_call() -> None:
    clock = FakeClock()
    scheduler = ProviderScheduler(tpm=100, clock=clock)
    order: list[str] = []
    async with scheduler.slot(INTERACTIVE, tokens=10) as grant:
        pass
    grant.used(100)  # after the block: the whole budget was spent
    late = await call(scheduler, "late", INTERACTIVE, order, tokens=30)
    assert not late.entered.is_set()
    assert scheduler.wakeup_at == clock.now + 18.0
    clock.now += 18.0
    scheduler.recheck()
    assert scheduler.stats().waiting[INTERACTIVE] == 0
    await late.finish()
    assert order == ["late"]


async def test_a_call_larger_than_the_tpm_budget_waits_for_a_full_bucket_then_runs() -> None:
    clock = FakeClock()
    scheduler = ProviderScheduler(tpm=100, clock=clock)
    order: list[str] = []
    async with scheduler.slot(INTERACTIVE, tokens=10):
        pass
    huge = await call(scheduler, "huge", BACKGROUND, order, tokens=500)
    assert scheduler.wakeup_at == clock.now + 6.0  # until the bucket is full again
    clock.now += 6.0
    scheduler.recheck()
    assert scheduler.stats().waiting[BACKGROUND] == 0
    await huge.finish()
    # It left a debt of 400 tokens: the next 10-token call waits for 410 tokens of refill.
    after = await call(scheduler, "after", INTERACTIVE, order, tokens=10)
    assert scheduler.wakeup_at == pytest.approx(clock.now + 246.0)
    after.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await after.task
    assert order == ["huge"]


async def test_the_refill_timer_admits_the_waiting_call_on_the_loop_clock() -> None:
    # The real clock: 6000 tokens/minute refill 1 token per 10 ms.
    scheduler = ProviderScheduler(tpm=6000)
    order: list[str] = []
    async with scheduler.slot(INTERACTIVE, tokens=6):
        pass
    huge = await call(scheduler, "huge", BACKGROUND, order, tokens=1_000_000)
    assert not huge.entered.is_set()
    assert scheduler.wakeup_at is not None
    async with asyncio.timeout(10):  # a hang guard, not a timing assertion
        await huge.finish()
    assert huge.grant is not None
    assert huge.grant.waited_s > 0
    assert scheduler.wakeup_at is None


async def test_without_limits_every_call_is_admitted_at_once() -> None:
    scheduler = ProviderScheduler()
    async with scheduler.slot(BACKGROUND, tokens=10**9) as a, scheduler.slot(INTERACTIVE) as b:
        assert (a.waited_s, b.waited_s) == (0.0, 0.0)
        assert scheduler.stats().active == 2
    assert scheduler.stats().active == 0


async def test_the_slot_is_released_when_the_call_raises() -> None:
    scheduler = ProviderScheduler(concurrency=1)
    with pytest.raises(RuntimeError):
        async with scheduler.slot(INTERACTIVE):
            raise RuntimeError("upstream failed")
    assert scheduler.stats().active == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"concurrency": 0}, {"rpm": 0}, {"tpm": -1}, {"aging_s": -1.0}, {"rpm": float("inf")}],
)
def test_invalid_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ProviderScheduler(**kwargs)  # type: ignore[arg-type]


async def test_negative_token_counts_are_refused() -> None:
    scheduler = ProviderScheduler(tpm=100)
    with pytest.raises(ValueError):
        async with scheduler.slot(INTERACTIVE, tokens=-1):
            pass
    async with scheduler.slot(INTERACTIVE, tokens=1) as grant:
        with pytest.raises(ValueError):
            grant.used(-1)
