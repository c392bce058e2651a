"""The built-in ``sql`` sink: each record into the ``route_records`` table of a database.

By default that is the store's own database (``[store] url``), so a turn's system-channel
record sits beside its turn row, queryable with plain SQL; ``url`` sends it to another SQLite
or Postgres database, which gets tokenwire's tables (migrated on first use). A redelivery of
the same (stream, route) changes nothing: the table's unique key makes the write exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ..store import Store
from .sinks import AttemptCallback


class SqlSink:
    """Writes records to ``route_records`` (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self._store = Store(url)
        self._opened = False
        self._opening = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SqlSink({self._store.url.split('@')[-1]!r})"  # no credentials in logs

    async def deliver(
        self,
        record: Mapping[str, Any],
        key: str,
        *,
        on_attempt: AttemptCallback | None = None,
    ) -> None:
        if on_attempt is not None:
            on_attempt(1)
        if not self._opened:
            async with self._opening:
                if not self._opened:
                    await self._store.open()
                    self._opened = True
        # The key is "<stream_id>:<route>"; a route name cannot contain ':'.
        stream_id, _, route = key.rpartition(":")
        await self._store.write_route_record(stream_id, route, dict(record))

    async def aclose(self) -> None:
        await self._store.aclose()
        self._opened = False
