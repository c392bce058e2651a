"""The sink contract: where a built-in route delivers a turn record.

A sink is anything with::

    async def deliver(record, key, *, on_attempt=None) -> None
    async def aclose() -> None

``deliver`` returns once the record is durably handed over (a 2xx, a written line) and raises
:class:`DeliveryError` (or any exception) when it is not. It may retry internally and calls
``on_attempt(n)`` as attempt ``n`` (1, 2, …) starts, so callers can report attempts even when
the delivery is cut short by a timeout. Delivery is at-least-once: a sink may deliver the same
``key`` more than once (a retry after a lost response), and the far side deduplicates by it.

The router calls sinks today; the persistent outbox (with the persistence issue) will call the
same ``deliver`` for records it stored, which is why the key is passed in rather than computed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

AttemptCallback = Callable[[int], None]


class DeliveryError(Exception):
    """A sink gave up on one record.

    ``attempts`` were made; ``retryable`` says whether trying again later (an outbox) could
    help: false for a refusal such as HTTP 400, true for exhausted retries on 5xx or a
    connection error. ``status`` is the last HTTP status, when there was one.
    """

    def __init__(
        self, message: str, *, attempts: int, retryable: bool, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.retryable = retryable
        self.status = status


@runtime_checkable
class Sink(Protocol):
    async def deliver(
        self,
        record: Mapping[str, Any],
        key: str,
        *,
        on_attempt: AttemptCallback | None = None,
    ) -> None: ...

    async def aclose(self) -> None: ...
