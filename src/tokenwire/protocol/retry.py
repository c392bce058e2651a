"""When to try again: ``Retry-After`` parsing and jittered exponential backoff, sans-I/O.

One rule for every retry tokenwire makes (upstream calls before the first token, webhook
deliveries): the delay doubles from ``initial_s`` up to ``max_s``, is jittered into its upper
half so that many failed callers do not come back in lockstep, and is at least what the peer
asked for in ``Retry-After`` (capped, so one header cannot park a caller for hours).
"""

from __future__ import annotations

import math
import random
import time
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date), or None
    when there is none or it cannot be read."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def backoff_delay(
    retry: int,
    *,
    initial_s: float,
    max_s: float,
    retry_after: float | None = None,
    retry_after_max_s: float = math.inf,
) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
    delay = min(max_s, initial_s * 2.0 ** (retry - 1))
    delay *= 0.5 + random.random() / 2
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_max_s))
    return delay
