from __future__ import annotations

import pytest

from tokenwire.engine.budget import TokenBucket


def test_starts_full_and_refills_continuously_up_to_one_minute() -> None:
    bucket = TokenBucket(120)  # 2 per second
    assert bucket.level(0.0) == 120
    bucket.take(120, 0.0)
    assert bucket.level(0.0) == 0
    assert bucket.level(1.5) == 3.0
    assert bucket.level(1000.0) == 120


def test_ready_at_is_when_the_cost_fits() -> None:
    bucket = TokenBucket(60)  # 1 per second
    bucket.take(50, 0.0)
    assert bucket.ready_at(10, 0.0) == 0.0
    assert bucket.ready_at(15, 0.0) == 5.0
    assert bucket.ready_at(15, 5.0) == 5.0


def test_a_cost_above_capacity_needs_a_full_bucket_and_leaves_a_debt() -> None:
    bucket = TokenBucket(60)
    bucket.take(6, 0.0)
    assert bucket.ready_at(1000, 0.0) == 6.0
    bucket.take(1000, 6.0)
    assert bucket.level(6.0) == -940
    assert bucket.ready_at(10, 6.0) == 956.0


def test_refund_is_capped_at_capacity() -> None:
    bucket = TokenBucket(60)
    bucket.take(10, 0.0)
    bucket.refund(30, 0.0)
    assert bucket.level(0.0) == 60


def test_a_clock_that_steps_back_neither_refills_nor_drains() -> None:
    bucket = TokenBucket(60)
    bucket.take(30, 10.0)
    assert bucket.level(5.0) == 30
    assert bucket.level(11.0) == 31


@pytest.mark.parametrize("per_minute", [0, -1, float("inf"), float("nan")])
def test_budget_must_be_positive_and_finite(per_minute: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(per_minute)
