"""One provider's concurrency / RPM / TPM limits, shared through Redis by every process.

The per-process :class:`~tokenwire.engine.scheduler.ProviderScheduler` orders a worker's own
calls (priority, FIFO, aging); with several workers its limits hold per process only. A
:class:`SharedBudget` is the cluster-wide check taken *after* local admission and before the
provider is called::

    async with scheduler.slot(priority, tokens=estimate) as local:
        async with budget.slot(tokens=estimate, holder=worker_id) as shared:
            ...  # call the provider
            await shared.used(actual_tokens)
        local.used(actual_tokens)

Semantics mirror :mod:`tokenwire.engine.budget`: each per-minute budget is a bucket holding one
minute's worth, starting full and refilling continuously; its level may go negative (a cost above
the capacity, payable once the bucket is full, or a usage report above the estimate) and later
callers wait the debt out. Concurrency is a sorted set of holders scored by lease expiry: a
holder whose process died stops counting after ``lease_s``; a live one renews its lease with
:meth:`SharedGrant.keepalive`.

One Lua script checks and takes everything at once (slot, one request, the tokens), or takes
nothing and answers how long to wait, so processes never half-admit a call. The scripts read
Redis server time, never a client's clock: workers on different machines agree on every bucket.
Admission across processes is not ordered: waiters poll, the next to ask after a slot frees gets
it; the local scheduler is where priority and fairness live.

Keys, all of one provider in one Redis Cluster slot (the provider is a hash tag)::

    {prefix}:budget:{<provider>}:holders   sorted set: holder -> lease expiry (server ms)
    {prefix}:budget:{<provider>}:rpm       hash: level, at (server ms of the last write)
    {prefix}:budget:{<provider>}:tpm       hash: level, at

Every admitted call is in the holders set, also when only RPM/TPM are limited: its entry is
how a lost reply or a cancelled attempt is told apart from a refused one. Each key expires on
its own: the set with its last lease, a bucket when it would have refilled completely.

Redis errors (``redis.exceptions.ConnectionError``, ``TimeoutError``, ...) propagate unchanged;
whether a call goes ahead without the shared check is the caller's decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["SharedBudget", "SharedGrant"]

_T = TypeVar("_T")

# Shared by every script. Times are server milliseconds (fractional); bucket fields are written
# with %.17g because Lua's own number-to-string keeps only 14 digits, which would round a
# timestamp to 0.1 ms and let a bucket drift with every write.
_LUA_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

-- The bucket's level at `now`. A missing key is a full bucket: a new one, or one whose TTL ran
-- out, which happens only once it would have refilled completely.
local function level_at(key, capacity, now)
  local state = redis.call('HMGET', key, 'level', 'at')
  local level, at = tonumber(state[1]), tonumber(state[2])
  if level == nil or at == nil then return capacity end
  -- A clock that steps back refills nothing (the stamp below moves back with it).
  if now > at then level = level + (now - at) * capacity / 60000 end
  return math.min(capacity, level)
end

-- Charge `cost` (a refund when negative, never above the capacity) and store the result.
local function charge(key, capacity, cost, now)
  local level = level_at(key, capacity, now) - cost
  if cost < 0 then level = math.min(capacity, level) end
  redis.call('HSET', key, 'level', string.format('%.17g', level),
             'at', string.format('%.17g', now))
  -- Gone when it would be full again: an idle provider leaves nothing behind, and losing a
  -- full bucket loses nothing.
  redis.call('PEXPIRE', key, math.ceil((capacity - level) * 60000 / capacity) + 1000)
end

-- Hold (or renew) `member`'s lease; the set itself expires with its last lease.
local function hold(holders, member, expires)
  redis.call('ZADD', holders, expires, member)
  local last = redis.call('ZRANGE', holders, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', holders, math.ceil(tonumber(last[2])))
end
"""

_ACQUIRE = (
    _LUA_PRELUDE
    + """
-- KEYS: holders, rpm bucket, tpm bucket
-- ARGV: member, concurrency, lease ms, rpm, tpm, tokens, longest hint ms (a 0 limit: none)
local holders, member = KEYS[1], ARGV[1]
local concurrency, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm, tpm, tokens = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()

redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
if redis.call('ZSCORE', holders, member) then
  -- The client retried a call whose reply was lost: it was admitted, do not charge it twice.
  hold(holders, member, now + lease)
  return 0
end

local wait = 0
if concurrency > 0 and redis.call('ZCARD', holders) >= concurrency then
  -- The earliest lease to run out; a release may come sooner, so the caller caps its sleep.
  local first = redis.call('ZRANGE', holders, 0, 0, 'WITHSCORES')
  wait = math.min(tonumber(first[2]) - now, tonumber(ARGV[7]))
end
local function deficit_ms(capacity, level, cost)
  -- A cost above the capacity is payable once the bucket is full: delayed, never refused.
  return (math.min(cost, capacity) - level) * 60000 / capacity
end
if rpm > 0 then wait = math.max(wait, deficit_ms(rpm, level_at(KEYS[2], rpm, now), 1)) end
if tpm > 0 then
  wait = math.max(wait, deficit_ms(tpm, level_at(KEYS[3], tpm, now), tokens))
end
if wait > 0 then return math.max(1, math.ceil(wait)) end

hold(holders, member, now + lease)
if rpm > 0 then charge(KEYS[2], rpm, 1, now) end
if tpm > 0 then charge(KEYS[3], tpm, tokens, now) end
return 0
"""
)

_UNDO = (
    _LUA_PRELUDE
    + """
-- KEYS: holders, rpm bucket, tpm bucket; ARGV: member, rpm, tpm, tokens
-- Only a member still in the set was admitted: give back exactly what its admission took.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local now = now_ms()
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
if rpm > 0 then charge(KEYS[2], rpm, -1, now) end
if tpm > 0 then charge(KEYS[3], tpm, -tonumber(ARGV[4]), now) end
return 1
"""
)

_CORRECT = (
    _LUA_PRELUDE
    + """
-- KEYS: tpm bucket; ARGV: tpm, tokens to charge (a refund when negative)
charge(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now_ms())
return 0
"""
)

_KEEPALIVE = (
    _LUA_PRELUDE
    + """
-- KEYS: holders; ARGV: member, lease ms
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
-- A lapsed lease is not revived: its slot may have been counted free and taken since.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
hold(KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
return 1
"""
)

_ACTIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
return redis.call('ZCOUNT', KEYS[1], string.format('(%.17g', now), '+inf')
"""


def _per_minute(name: str, value: float | None) -> float | None:
    if value is not None and not (0 < value < math.inf):
        raise ValueError(f"{name} must be positive and finite, not {value}")
    return value


class SharedGrant:
    """An admitted call, holding a cluster-wide concurrency slot until :meth:`release`.

    ``waited_s`` is how long :meth:`SharedBudget.acquire` waited (0.0 if admitted at once);
    ``tokens`` is what the TPM budget is charged for the call so far; ``holder`` is its entry in
    the holders set (the caller's holder name and a random suffix, so two calls of one process
    never share an entry).
    """

    __slots__ = ("_budget", "_released", "holder", "tokens", "waited_s")

    def __init__(self, budget: SharedBudget, holder: str, tokens: int, waited_s: float) -> None:
        self._budget = budget
        self._released = False
        self.holder = holder
        self.tokens = tokens
        self.waited_s = waited_s

    @property
    def released(self) -> bool:
        return self._released

    async def used(self, tokens: int) -> None:
        """Report the call's actual token count; each report replaces the previous one.

        The shared TPM budget is corrected by the difference from what was charged, as
        :meth:`tokenwire.engine.scheduler.Grant.used` does locally: an over-estimate is refunded,
        an under-estimate becomes debt that later callers wait out. Valid after release too.
        """
        if tokens < 0:
            raise ValueError("token usage cannot be negative")
        delta, self.tokens = tokens - self.tokens, tokens
        await self._budget._correct(delta)

    async def release(self) -> None:
        """Free the concurrency slot. Idempotent; after a Redis error it may be called again
        (and if it never succeeds, the lease frees the slot after ``lease_s``)."""
        if not self._released:
            await self._budget._release(self.holder)
            self._released = True

    async def keepalive(self) -> bool:
        """Extend the lease to ``lease_s`` from now. Call it well within ``lease_s`` for calls
        that may outlast it. False if the lease had already lapsed (the slot may be someone
        else's by now): the call goes on, but no longer counts against the limit."""
        if self._released:
            return False
        return await self._budget._keepalive(self.holder)


class SharedBudget:
    """One provider's concurrency / rpm / tpm, shared through Redis by every process.

    ``None`` means no limit of that kind; a budget with no limit at all admits at once without
    touching Redis. ``lease_s`` is how long a holder that stops renewing keeps its slot;
    ``poll_max_s`` bounds how long a waiter sleeps between attempts, hence how late it notices a
    released slot or a refund.
    """

    def __init__(
        self,
        redis: Redis,
        provider: str,
        *,
        concurrency: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        prefix: str = "tw",
        lease_s: float = 30.0,
        poll_max_s: float = 1.0,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not (0 < lease_s < math.inf):
            raise ValueError("lease_s must be positive and finite")
        if not (0 < poll_max_s < math.inf):
            raise ValueError("poll_max_s must be positive and finite")
        self.provider = provider
        self._redis = redis
        self._concurrency = concurrency
        self._rpm = _per_minute("rpm", rpm)
        self._tpm = _per_minute("tpm", tpm)
        self._lease_ms = max(1, round(lease_s * 1000))
        self._poll_max_s = poll_max_s
        # The provider as a hash tag: all of its keys land in one Redis Cluster slot, which a
        # script touching several keys requires.
        base = f"{prefix}:budget:{{{provider}}}"
        self._holders = f"{base}:holders"
        self._rpm_key = f"{base}:rpm"
        self._tpm_key = f"{base}:tpm"
        self._acquire_script = redis.register_script(_ACQUIRE)
        self._undo_script = redis.register_script(_UNDO)
        self._correct_script = redis.register_script(_CORRECT)
        self._keepalive_script = redis.register_script(_KEEPALIVE)
        self._active_script = redis.register_script(_ACTIVE)
        self._tasks: set[asyncio.Task[Any]] = set()  # Redis commands in flight

    @property
    def limited(self) -> bool:
        """Whether any limit is set (if not, sharing has nothing to do)."""
        return self._concurrency is not None or self._rpm is not None or self._tpm is not None

    @property
    def keys(self) -> tuple[str, str, str]:
        """The holders set and the RPM and TPM buckets (each exists only while in use)."""
        return (self._holders, self._rpm_key, self._tpm_key)

    @contextlib.asynccontextmanager
    async def slot(self, *, tokens: int, holder: str) -> AsyncIterator[SharedGrant]:
        """:meth:`acquire`, hold the slot for the block, release it on exit, even when the
        block is cancelled (the release runs in a task of its own)."""
        grant = await self.acquire(tokens=tokens, holder=holder)
        try:
            yield grant
        except BaseException:
            # The block's own error is the one to see; a release that fails now is covered by
            # the lease.
            with contextlib.suppress(RedisError):
                await grant.release()
            raise
        await grant.release()

    async def acquire(self, *, tokens: int, holder: str) -> SharedGrant:
        """Wait until a concurrency slot is free and both budgets can pay (1 request, ``tokens``
        tokens); take them atomically. Cancelling the wait leaves nothing taken."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        member = self._member(holder)
        waited = False
        # The same member on every attempt: a refused attempt leaves no entry behind.
        while (wait_ms := await self._attempt(member, tokens)) > 0:
            waited = True
            await asyncio.sleep(min(wait_ms / 1000, self._poll_max_s))
        return SharedGrant(self, member, tokens, loop.time() - started if waited else 0.0)

    async def try_acquire(self, *, tokens: int, holder: str) -> SharedGrant | None:
        """Take a slot and the budgets if all are available now; otherwise take nothing and
        return None."""
        member = self._member(holder)
        if await self._attempt(member, tokens) == 0:
            return SharedGrant(self, member, tokens, 0.0)
        return None

    async def active(self) -> int:
        """Calls holding a slot across the cluster now (lapsed leases not counted)."""
        if not self.limited:
            return 0
        return int(await self._shielded(self._active_script(keys=[self._holders])))

    # -- internals -------------------------------------------------------------------------
    #
    # Every Redis command runs in a task of its own, which the caller awaits through shield().
    # A cancelled caller stops waiting at once, while the command runs to completion: a release
    # or a usage report still lands, and an admission's outcome is known and can be undone.
    # Cancelling the command itself instead would also be unreliable: redis-py sets up
    # connections with asyncio.wait_for, which on Python 3.11 swallows a cancellation that
    # coincides with its completion, and the waiter would then carry on as if never cancelled.

    def _member(self, holder: str) -> str:
        return f"{holder}/{secrets.token_hex(8)}"

    async def _attempt(self, member: str, tokens: int) -> int:
        """One check-and-take: 0 if admitted, else milliseconds until it might succeed."""
        if tokens < 0:
            raise ValueError("a token estimate cannot be negative")
        if not self.limited:
            return 0
        attempt = self._spawn(
            self._acquire_script(
                keys=[self._holders, self._rpm_key, self._tpm_key],
                args=[
                    member,
                    self._concurrency or 0,
                    self._lease_ms,
                    self._rpm or 0,
                    self._tpm or 0,
                    tokens,
                    max(1, math.ceil(self._poll_max_s * 1000)),
                ],
            )
        )
        try:
            return int(await asyncio.shield(attempt))
        except asyncio.CancelledError:
            # Wait for the clean-up, so that a cancelled acquire has taken nothing once it
            # returns (a second cancellation stops the wait, not the clean-up).
            with contextlib.suppress(RedisError):
                await self._shielded(self._undo_after(attempt, member, tokens))
            raise

    async def _undo_after(self, attempt: asyncio.Task[Any], member: str, tokens: int) -> None:
        """Once ``attempt`` has settled, give back whatever it took."""
        with contextlib.suppress(RedisError):
            if await attempt != 0:
                return  # refused: it took nothing
        # Admitted, or failed without saying whether the script ran (a lost reply). The undo
        # script tells by the member: it is in the set exactly when the attempt was admitted.
        await self._undo_script(
            keys=[self._holders, self._rpm_key, self._tpm_key],
            args=[member, self._rpm or 0, self._tpm or 0, tokens],
        )

    async def _correct(self, delta: int) -> None:
        if self._tpm is not None and delta != 0:
            await self._shielded(
                self._correct_script(keys=[self._tpm_key], args=[self._tpm, delta])
            )

    async def _release(self, member: str) -> None:
        if self.limited:
            await self._shielded(self._redis.zrem(self._holders, member))

    async def _keepalive(self, member: str) -> bool:
        if not self.limited:
            return True
        renewed = await self._shielded(
            self._keepalive_script(keys=[self._holders], args=[member, self._lease_ms])
        )
        return bool(renewed)

    async def _shielded(self, work: Awaitable[_T]) -> _T:
        return await asyncio.shield(self._spawn(work))

    def _spawn(self, work: Awaitable[_T]) -> asyncio.Task[_T]:
        async def run() -> _T:
            return await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            # Retrieved here, so that a failure nobody is left to see (its caller was
            # cancelled) is not logged as "never retrieved"; a caller still waiting gets it
            # from shield() all the same.
            task.exception()
