"""Fair shares: a tenant that filled its share is refused while the others still start turns;
a socket's command rate is a token bucket."""

from __future__ import annotations

import pytest

from tokenwire import Engine, Overloaded
from tokenwire.engine.shares import TenantShares, TokenBucket

from .conftest import scripted_settings

HANG = {"prompt": "x", "script": {"tokens": ["a"], "fault": {"kind": "hang", "at": 0}}}


async def test_a_tenant_that_filled_its_share_does_not_lock_out_the_others() -> None:
    # max_active_turns 4: a tenant's default share is half of it.
    async with Engine(scripted_settings(limits={"max_active_turns": 4})) as engine:
        greedy = [await engine.submit(HANG, tenant="greedy") for _ in range(2)]
        with pytest.raises(Overloaded) as info:
            await engine.submit(HANG, tenant="greedy")
        assert "tenant" in info.value.message
        polite = await engine.submit({"prompt": "x"}, tenant="polite")
        assert (await polite.wait()).type == "done"
        # A finished turn frees its tenant's slot.
        greedy[0].cancel()
        await greedy[0].wait()
        again = await engine.submit(HANG, tenant="greedy")
        for handle in (greedy[1], again):
            handle.cancel()
            await handle.wait()
        assert engine.shares.in_flight("greedy") == 0


async def test_the_share_is_configurable_and_turns_without_a_tenant_have_none() -> None:
    limits = {"max_active_turns": 10, "max_active_turns_per_tenant": 1}
    async with Engine(scripted_settings(limits=limits)) as engine:
        held = await engine.submit(HANG, tenant="t")
        with pytest.raises(Overloaded):
            await engine.submit(HANG, tenant="t")
        anonymous = [await engine.submit(HANG) for _ in range(3)]  # auth off: no share
        for handle in (held, *anonymous):
            handle.cancel()
            await handle.wait()


def test_tenant_shares_count_and_forget() -> None:
    shares = TenantShares(2)
    shares.add("a")
    shares.add("a")
    assert shares.full("a") and not shares.full("b") and not shares.full(None)
    shares.remove("a")
    shares.remove("a")
    assert shares.in_flight("a") == 0 and not shares._counts


def test_token_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)  # 0.5 s at 2/s: one more
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped
