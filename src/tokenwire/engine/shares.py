"""Fair shares: no single tenant or socket may take every turn slot or flood the server.

- :class:`TenantShares` counts the turns in flight per tenant, so a tenant that filled its
  share (``[limits] max_active_turns_per_tenant``) is refused while other tenants still start
  theirs. Turns without a tenant (auth off: one anonymous tenant, everybody) have no share of
  their own: ``max_active_turns`` is theirs.
- :class:`TokenBucket` limits the rate of a socket's commands (``ws_commands_per_s`` with a
  burst of ``ws_command_burst``); the WebSocket closes a socket that runs it dry.

Both are plain counters (no I/O, the clock is passed in), tested without an event loop.
"""

from __future__ import annotations

from collections import Counter

from ..config import LimitSettings


class TenantShares:
    """Turns in flight per tenant, and the check that a new one fits its tenant's share."""

    def __init__(self, per_tenant: int | None) -> None:
        """``per_tenant``: the most turns one tenant may have in flight (None: no limit)."""
        self.per_tenant = per_tenant
        self._counts: Counter[str] = Counter()

    def in_flight(self, tenant: str | None) -> int:
        return self._counts[tenant] if tenant is not None else 0

    def full(self, tenant: str | None) -> bool:
        """True when ``tenant`` may not start another turn now."""
        if tenant is None or self.per_tenant is None:
            return False
        return self._counts[tenant] >= self.per_tenant

    def add(self, tenant: str | None) -> None:
        if tenant is not None:
            self._counts[tenant] += 1

    def remove(self, tenant: str | None) -> None:
        if tenant is None:
            return
        left = self._counts[tenant] - 1
        if left > 0:
            self._counts[tenant] = left
        else:
            # Forgotten at zero: a server that saw a million tenants does not keep them all.
            del self._counts[tenant]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; each command takes one."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        """Take one token at time ``now`` (seconds, monotonic). False: the bucket is empty."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def tenant_share(limits: LimitSettings) -> int:
    """A tenant's share: as configured, else half of ``max_active_turns`` (so one tenant
    never locks out the others)."""
    if limits.max_active_turns_per_tenant is not None:
        return limits.max_active_turns_per_tenant
    return max(1, limits.max_active_turns // 2)
