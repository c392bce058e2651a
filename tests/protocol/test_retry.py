from __future__ import annotations

from tokenwire.protocol.retry import backoff_delay, retry_after_seconds


def test_backoff_doubles_with_jitter_in_its_upper_half_and_caps() -> None:
    for retry, full in [(1, 0.25), (2, 0.5), (3, 1.0), (10, 4.0)]:
        for _ in range(50):
            delay = backoff_delay(retry, initial_s=0.25, max_s=4.0)
            assert full / 2 <= delay <= full


def test_retry_after_is_a_floor_with_a_cap() -> None:
    assert backoff_delay(1, initial_s=0.01, max_s=0.01, retry_after=3.0) == 3.0
    capped = backoff_delay(1, initial_s=0.01, max_s=0.01, retry_after=3600, retry_after_max_s=60)
    assert capped == 60


def test_retry_after_values() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(" -5 ") == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    date = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert retry_after_seconds(date, now=1445412480.0) == 10.0
