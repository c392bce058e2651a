"""Delivering the system channel from the durable outbox.

A finished turn's deliveries (one per matching route) are queued in the store in the same
transaction as its record (:class:`~tokenwire.engine.records.TurnRecorder`). This worker claims
due items with a lease, runs each through its route (the sink's own retries and timeout apply),
records the route's result with the turn, and settles the item: delivered; failed, due again
after a backoff; or dead after ``max_attempts``. A process that dies mid-delivery leaves the
item leased; when the lease expires any process claims it again, so a delivery is at least
once, and the idempotency key (``stream_id:route``) lets the far side make it exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

from ..protocol.retry import backoff_delay
from ..router import Router
from ..store import Store
from .metrics import EngineMetrics

logger = logging.getLogger("tokenwire.outbox")

_BATCH = 32


class OutboxWorker:
    """One per engine. ``start()`` runs it; ``wake()`` after queueing; ``aclose()`` stops it."""

    def __init__(
        self,
        store: Store,
        router: Router,
        *,
        metrics: EngineMetrics,
        poll_s: float,
        lease_s: float,
        max_attempts: int,
        backoff_initial_s: float,
        backoff_max_s: float,
        results: OrderedDict[str, list[dict[str, Any]]],
    ) -> None:
        self._store = store
        self._router = router
        self._metrics = metrics
        self._poll_s = poll_s
        self._lease_s = lease_s
        self._max_attempts = max_attempts
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._results = results
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsettled: set[tuple[str, str]] = set()
        self._progress = asyncio.Condition()
        self._rounds = 0
        self._rounds_begun = 0
        self._last_claimed = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tokenwire-outbox")

    def queued(self, stream_id: str, routes: list[str]) -> None:
        """Deliveries of this process were queued: count them until their first attempt ends,
        and deliver them now rather than at the next poll."""
        self._unsettled.update((stream_id, route) for route in routes)
        self._wake.set()

    async def first_attempts(self) -> None:
        """Wait until every delivery queued by this process so far has been attempted once."""
        async with self._progress:
            await self._progress.wait_for(lambda: not self._unsettled or self._task is None)

    async def drained(self) -> None:
        """Wait for a round of the worker, started after this call, that found nothing due."""
        async with self._progress:
            target = self._rounds_begun + 1  # the next round to begin
            self._wake.set()
            await self._progress.wait_for(
                lambda: self._task is None or (self._rounds >= target and not self._last_claimed)
            )

    async def _run(self) -> None:
        while True:
            self._rounds_begun += 1
            self._wake.clear()  # a wake() during this round makes the next begin at once
            try:
                claimed = await self._store.claim_due(_BATCH, lease_s=self._lease_s)
            except Exception as exc:
                logger.warning("outbox: claiming deliveries failed: %r", exc)
                claimed = []
            if claimed:
                await asyncio.gather(*(self._deliver(item) for item in claimed))
            async with self._progress:
                self._rounds += 1
                self._last_claimed = len(claimed)
                self._progress.notify_all()
            if len(claimed) == _BATCH:
                continue  # more may be due now
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wake.wait()

    async def _deliver(self, item: dict[str, Any]) -> None:
        stream_id, route, attempts = item["stream_id"], item["route"], item["attempts"]
        try:
            result = (await self._router.deliver(route, item["payload"])).to_dict()
        except KeyError:
            result = {
                "route": route,
                "ok": False,
                "attempts": 0,
                "outcome": "error",
                "error": "the route is no longer configured",
                "duration_ms": 0.0,
                "idempotency_key": f"{stream_id}:{route}",
                "retryable": False,
            }
        try:
            await self._store.record_route_results(stream_id, [result])
            if result["ok"]:
                await self._store.mark_delivered(item["id"])
                outcome = "ok"
            elif attempts >= self._max_attempts or not result.get("retryable", True):
                await self._store.mark_failed(item["id"], str(result["error"]), None)
                outcome = "dead"
            else:
                delay = backoff_delay(attempts, initial_s=self._backoff[0], max_s=self._backoff[1])
                retry_at = datetime.now(UTC) + timedelta(seconds=delay)
                await self._store.mark_failed(item["id"], str(result["error"]), retry_at)
                outcome = "retry"
        except Exception as exc:
            # The lease runs out and the item is claimed again: at least once holds.
            logger.warning("outbox: settling %s/%s failed: %r", stream_id, route, exc)
            outcome = "retry"
        self._metrics.outbox.labels(route, outcome).inc()
        self._remember(stream_id, result)
        async with self._progress:
            self._unsettled.discard((stream_id, route))
            self._progress.notify_all()

    def _remember(self, stream_id: str, result: dict[str, Any]) -> None:
        known = [r for r in self._results.get(stream_id, []) if r["route"] != result["route"]]
        self._results[stream_id] = [*known, result]
        self._results.move_to_end(stream_id)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._progress:
            self._progress.notify_all()
