"""A per-minute budget (requests or tokens per minute) as a continuously refilling token bucket.

Sans-I/O: no clock and no asyncio. The caller passes the time (seconds, any monotonic clock) to
every method, and the bucket answers *when* a cost can be paid; waiting is the caller's job
(:mod:`tokenwire.engine.scheduler` arms one timer at that time).

The bucket holds at most one minute's budget and starts full, so a burst of a whole minute's
budget is allowed at once; after that it refills at ``per_minute / 60`` per second. The level may
go negative: a cost larger than the whole budget, or a usage report above the estimate, is a debt
that later callers wait out. That keeps the long-run rate honest without refusing anyone.
"""

from __future__ import annotations

import math


class TokenBucket:
    """``per_minute`` units per minute, refilled continuously, capacity one minute's worth."""

    __slots__ = ("_level", "_rate", "_updated_at", "capacity")

    def __init__(self, per_minute: float) -> None:
        if not (0 < per_minute < math.inf):
            raise ValueError(f"a per-minute budget must be positive and finite, not {per_minute}")
        self.capacity = float(per_minute)
        self._rate = self.capacity / 60.0
        self._level = self.capacity
        self._updated_at: float | None = None

    def level(self, now: float) -> float:
        """Units available at ``now`` (negative while in debt)."""
        self._refill(now)
        return self._level

    def ready_at(self, cost: float, now: float) -> float:
        """The earliest time ``cost`` can be paid: ``now`` if it can be paid at once.

        A cost above the capacity could never fit; it is payable when the bucket is full (and
        leaves it in debt), so it is delayed but never refused.
        """
        self._refill(now)
        deficit = min(cost, self.capacity) - self._level
        return now if deficit <= 0 else now + deficit / self._rate

    def take(self, cost: float, now: float) -> None:
        """Pay ``cost``, whether or not it fits (callers check :meth:`ready_at` first)."""
        self._refill(now)
        self._level -= cost

    def refund(self, amount: float, now: float) -> None:
        """Give back ``amount`` (an over-estimate, a call that never happened), up to capacity."""
        self._refill(now)
        self._level = min(self.capacity, self._level + amount)

    def _refill(self, now: float) -> None:
        last = self._updated_at
        if last is None:
            self._updated_at = now
        elif now > last:  # a clock that steps back refills nothing, and never takes anything
            self._level = min(self.capacity, self._level + (now - last) * self._rate)
            self._updated_at = now
