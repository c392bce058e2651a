"""What one route did with one turn: the per-route result recorded with the turn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

Outcome = Literal["ok", "error", "timeout"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteResult:
    """The result of one route for one record. ``ok`` is ``outcome == "ok"``."""

    route: str
    ok: bool
    attempts: int
    """Delivery attempts started: 1 for a plain handler, 1..max_attempts for a retrying sink,
    0 when the route never ran (its condition raised, or the router was closed)."""
    error: str | None
    """``"<ExceptionType>: <message>"`` or ``"timed out after <n>s"``; None when ok."""
    duration_ms: float
    idempotency_key: str
    """``<stream_id>:<route>``: what the far side deduplicates on."""
    outcome: Outcome
    retryable: bool = False
    """For a failure: whether delivering again later could succeed (a timeout, a 5xx, a lost
    connection), as opposed to a refusal such as HTTP 400. The outbox stops retrying when
    False."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, e.g. to store with the turn."""
        return asdict(self)


ResultObserver = Callable[[RouteResult], None]
"""Called with every result as it is made (on the event loop): keep it quick, e.g. a counter."""
