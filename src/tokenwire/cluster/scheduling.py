"""A provider's limits across the cluster: the local scheduler, then the shared budget.

In scale-out mode a provider's ``concurrency``, ``rpm`` and ``tpm`` hold for the whole
deployment, not per worker. :class:`SharedScheduler` is a drop-in
:class:`~tokenwire.engine.scheduler.ProviderScheduler`: a call is first admitted locally (where
priority, FIFO and aging decide the order among this worker's calls), then by the
:class:`~.budget.SharedBudget` every worker consults in Redis. The time spent waiting on either
is the grant's ``waited_s``; the tokens reported with ``grant.used`` correct the shared TPM
budget when the call ends.

A Redis that cannot answer the shared check does not stop the answer: the call goes ahead on
the local limits alone (an outage would otherwise turn into failed turns), and the miss is
counted in ``tokenwire_redis_errors_total{op="budget"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from ..engine.scheduler import Grant, Priority, ProviderScheduler
from .budget import SharedBudget, SharedGrant
from .connection import UNAVAILABLE

logger = logging.getLogger("tokenwire.cluster")


class SharedScheduler(ProviderScheduler):
    """A :class:`ProviderScheduler` whose admissions also pass ``shared``."""

    def __init__(
        self,
        shared: SharedBudget,
        *,
        holder: str,
        on_error: Callable[[str], None] = lambda _op: None,
        concurrency: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        aging_s: float = 30.0,
        keepalive_s: float = 10.0,
    ) -> None:
        super().__init__(concurrency=concurrency, rpm=rpm, tpm=tpm, aging_s=aging_s)
        self.shared = shared
        self._holder = holder
        self._on_error = on_error
        self._keepalive_s = keepalive_s

    @contextlib.asynccontextmanager
    async def slot(self, priority: Priority, *, tokens: int = 0) -> AsyncIterator[Grant]:
        async with super().slot(priority, tokens=tokens) as grant:
            loop = asyncio.get_running_loop()
            started = loop.time()
            shared: SharedGrant | None = None
            try:
                shared = await self.shared.acquire(tokens=tokens, holder=self._holder)
            except UNAVAILABLE as exc:
                self._on_error("budget")
                logger.warning("shared budget unavailable (%r): local limits only", exc)
            grant.waited_s += loop.time() - started
            keepalive = (
                asyncio.ensure_future(self._keepalive(shared)) if shared is not None else None
            )
            try:
                yield grant
            finally:
                if keepalive is not None:
                    keepalive.cancel()
                if shared is not None:
                    await asyncio.shield(self._settle(shared, grant.tokens))

    async def _keepalive(self, shared: SharedGrant) -> None:
        while True:
            await asyncio.sleep(self._keepalive_s)
            with contextlib.suppress(*UNAVAILABLE):
                await shared.keepalive()

    async def _settle(self, shared: SharedGrant, tokens: int) -> None:
        try:
            if tokens != shared.tokens:
                await shared.used(tokens)
            await shared.release()
        except UNAVAILABLE:
            self._on_error("budget")  # the lease frees the slot; the TPM estimate stands
