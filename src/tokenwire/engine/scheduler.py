"""Priority admission of provider calls under a concurrency limit and RPM/TPM budgets.

One :class:`ProviderScheduler` per provider. Each call holds a slot while it talks upstream::

    async with scheduler.slot(Priority.INTERACTIVE, tokens=estimate) as grant:
        ...  # call the provider; grant.waited_s is how long it queued
    grant.used(actual_tokens)  # inside or after the block: corrects the TPM charge

Admission order, which callers may rely on:

- a waiting ``INTERACTIVE`` call is admitted before any waiting ``BACKGROUND`` call;
- calls of one priority are admitted in arrival order;
- aging: a background call that has waited ``aging_s`` or more counts as interactive from its
  arrival, so it goes ahead of interactive calls that arrived after it (never of older ones).
  Background work is delayed, never starved; ``aging_s=0`` is plain FIFO;
- strict head of line: the first call in that order is the next admitted. A smaller call behind
  it never overtakes it, even if it would fit the budget, so large calls are not starved either.

The head is admitted when a concurrency slot is free and both budgets can pay for it (one
request, ``tokens`` tokens; see :mod:`.budget`). A call larger than the whole TPM budget is
admitted once the bucket is full and leaves it in debt: delayed, never deadlocked.

Waiting costs no polling: every waiter is a future, resolved synchronously (within the same
loop iteration) when a slot is released, a usage report refunds tokens, or the one timer armed
at the head's refill time fires. A cancelled waiter leaves the queue; if it had just been
admitted, its slot and budget go back. The scheduler binds to the loop of its first call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from .budget import TokenBucket

_CLOCK_SLACK_S = 0.001
"""A timer may fire up to this early (the loop's clock resolution); the head is admitted then."""


class Priority(StrEnum):
    INTERACTIVE = "interactive"
    """The user's text stream: someone is watching the cursor."""
    BACKGROUND = "background"
    """Extraction, summaries: nobody waits on each token."""


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A snapshot for metrics; every mapping has both priorities, by the priority asked for."""

    waiting: Mapping[Priority, int]
    admitted: Mapping[Priority, int]
    cancelled: Mapping[Priority, int]
    """Waiters whose task was cancelled before their call started."""
    wait_s: Mapping[Priority, float]
    """Total seconds admitted calls spent queued."""
    promoted: int
    """Background calls admitted ahead of a waiting interactive call because they had aged."""
    active: int


class Grant:
    """An admitted call. ``waited_s`` is its time in the queue (0.0 if admitted at once);
    ``tokens`` is what the TPM budget is charged for it so far."""

    __slots__ = ("_released", "_scheduler", "priority", "promoted", "tokens", "waited_s")

    def __init__(
        self,
        scheduler: ProviderScheduler,
        priority: Priority,
        tokens: int,
        waited_s: float,
        promoted: bool,
    ) -> None:
        self._scheduler = scheduler
        self._released = False
        self.priority = priority
        self.tokens = tokens
        self.waited_s = waited_s
        self.promoted = promoted

    def used(self, tokens: int) -> None:
        """Report the call's actual token count (input + output, or the best estimate).

        The TPM budget is corrected by the difference from what was charged: an over-estimate is
        refunded (and may admit waiters at once), an under-estimate becomes debt. Call it inside
        or after the ``async with``, as often as usage becomes known; each report replaces the
        previous one. If the call never reached the provider, report 0.
        """
        if tokens < 0:
            raise ValueError("token usage cannot be negative")
        delta, self.tokens = tokens - self.tokens, tokens
        self._scheduler._correct(delta)


@dataclass(eq=False, slots=True)
class _Waiter:
    seq: int
    priority: Priority
    tokens: int
    enqueued_at: float
    future: asyncio.Future[Grant]


class ProviderScheduler:
    """Admits calls to one provider; ``None`` means no limit of that kind."""

    def __init__(
        self,
        *,
        concurrency: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        aging_s: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock`` (seconds, monotonic) defaults to the event loop's. An injected clock (tests)
        still gets the refill timer, armed (wake-up - clock()) loop seconds ahead; after moving
        it, call :meth:`recheck`."""
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not aging_s >= 0:
            raise ValueError("aging_s must be zero or more")
        self._concurrency = concurrency
        self._rpm = TokenBucket(rpm) if rpm is not None else None
        self._tpm = TokenBucket(tpm) if tpm is not None else None
        self._aging_s = aging_s
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues = {p: OrderedDict[_Waiter, None]() for p in Priority}
        self._seq = itertools.count()
        self._active = 0
        self._timer: asyncio.TimerHandle | None = None
        self._wakeup_at: float | None = None
        self._admitted = dict.fromkeys(Priority, 0)
        self._cancelled = dict.fromkeys(Priority, 0)
        self._wait_s = dict.fromkeys(Priority, 0.0)
        self._promoted = 0

    @contextlib.asynccontextmanager
    async def slot(self, priority: Priority, *, tokens: int = 0) -> AsyncIterator[Grant]:
        """Wait for admission, hold a concurrency slot for the block, release it on exit
        (whatever happens). ``tokens`` is the TPM estimate charged now; correct it with
        :meth:`Grant.used`. Cancelling the waiting task takes the call out of the queue."""
        grant = await self._acquire(priority, tokens)
        try:
            yield grant
        finally:
            self._release(grant)

    @property
    def wakeup_at(self) -> float | None:
        """When the scheduler's timer will next re-check a budget-blocked head (its clock)."""
        return self._wakeup_at

    def recheck(self) -> None:
        """Admit whatever can be admitted now. The scheduler's own timer does this at the
        earliest refill; call it only when the injected clock moved without the loop knowing."""
        if self._loop is not None:
            self._dispatch()

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            waiting={p: len(q) for p, q in self._queues.items()},
            admitted=dict(self._admitted),
            cancelled=dict(self._cancelled),
            wait_s=dict(self._wait_s),
            promoted=self._promoted,
            active=self._active,
        )

    # -- admission ---------------------------------------------------------------------------

    async def _acquire(self, priority: Priority, tokens: int) -> Grant:
        if tokens < 0:
            raise ValueError("a token estimate cannot be negative")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            if self._clock is None:
                self._clock = self._loop.time
        queue = self._queues[priority]
        now = self._now()
        waiter = _Waiter(next(self._seq), priority, tokens, now, self._loop.create_future())
        queue[waiter] = None
        self._dispatch(now)  # the same `now`: an immediate admission waited exactly 0.0 s
        try:
            # Awaiting a future that is already done does not yield: an immediate admission
            # costs no loop iteration.
            grant = await waiter.future
        except asyncio.CancelledError:
            queue.pop(waiter, None)
            self._cancelled[priority] += 1
            if waiter.future.done() and not waiter.future.cancelled():
                # Admitted in the same iteration as the cancel, before this task resumed: the
                # call never started, so its slot and its budget go back.
                grant = waiter.future.result()
                if self._rpm is not None:
                    self._rpm.refund(1, self._now())
                grant.used(0)
                self._release(grant)
            else:
                self._dispatch()  # it may have been the head that held the others back
            raise
        self._admitted[priority] += 1
        self._wait_s[priority] += grant.waited_s
        self._promoted += grant.promoted
        return grant

    def _release(self, grant: Grant) -> None:
        if not grant._released:
            grant._released = True
            self._active -= 1
            self._dispatch()

    def _correct(self, delta: int) -> None:
        if self._tpm is None or delta == 0 or self._loop is None:
            return
        if delta > 0:
            self._tpm.take(delta, self._now())
        else:
            self._tpm.refund(-delta, self._now())
        self._dispatch()  # a refund may admit the head; a debt moves its wake-up later

    def _dispatch(self, now: float | None = None) -> None:
        """Admit heads while they can go; otherwise arm the timer for the head's refill."""
        if now is None:
            now = self._now()
        while True:
            waiter, promoted = self._head(now)
            if waiter is None or (
                self._concurrency is not None and self._active >= self._concurrency
            ):
                self._arm(None, now)  # a release (not a timer) will call us again
                return
            ready = now
            if self._rpm is not None:
                ready = max(ready, self._rpm.ready_at(1, now))
            if self._tpm is not None:
                ready = max(ready, self._tpm.ready_at(waiter.tokens, now))
            if ready > now + _CLOCK_SLACK_S:
                self._arm(ready, now)
                return
            del self._queues[waiter.priority][waiter]
            if self._rpm is not None:
                self._rpm.take(1, now)
            if self._tpm is not None:
                self._tpm.take(waiter.tokens, now)
            self._active += 1
            waited = max(0.0, now - waiter.enqueued_at)
            waiter.future.set_result(Grant(self, waiter.priority, waiter.tokens, waited, promoted))

    def _head(self, now: float) -> tuple[_Waiter | None, bool]:
        """The next waiter in admission order, and whether aging put it ahead of an
        interactive one."""
        interactive = self._first(Priority.INTERACTIVE)
        background = self._first(Priority.BACKGROUND)
        if background is None:
            return interactive, False
        if interactive is None:
            return background, False
        aged = now - background.enqueued_at >= self._aging_s
        if aged and background.seq < interactive.seq:
            return background, True
        return interactive, False

    def _first(self, priority: Priority) -> _Waiter | None:
        queue = self._queues[priority]
        while queue:
            waiter = next(iter(queue))
            if not waiter.future.done():
                return waiter
            # Its task was cancelled and has not run its cleanup yet: skip it for good.
            del queue[waiter]
        return None

    def _arm(self, at: float | None, now: float) -> None:
        if at == self._wakeup_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wakeup_at = at
        if at is not None:
            assert self._loop is not None
            self._timer = self._loop.call_later(at - now, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._wakeup_at = None
        self._dispatch()

    def _now(self) -> float:
        assert self._clock is not None, "bound on the first call"
        return self._clock()
