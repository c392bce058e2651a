"""The cluster's list of running turns (``tw:active``, for ``GET /v1/streams?state=active``).

A worker lists a turn once it runs it (:func:`mark_active`), and the script that appends a
turn's terminal event removes it from the list, whoever writes that event: the worker, a worker
taking the turn over (``worker_lost``), a gateway ending a turn Redis lost. So a killed worker
leaves no ghost behind once its turn has ended. What can still be left (an entry written by a
worker that was cut off, a turn whose keys expired) is an orphan, and :func:`sweep` removes
it: gateways sweep what they list, workers sweep the whole list now and then.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ..protocol import RemoteProtocolError, decode_event, is_terminal
from .connection import RedisClient
from .keys import Keys
from .scripts import MARK_ACTIVE


async def mark_active(
    redis: RedisClient, keys: Keys, stream_id: str, summary: dict[str, Any]
) -> bool:
    """List a running turn; False when its terminal event is already written (not listed)."""
    script = redis.register_script(MARK_ACTIVE)
    listed = await script(
        keys=[keys.run(stream_id), keys.active], args=[stream_id, orjson.dumps(summary)]
    )
    return bool(listed)


async def sweep(redis: RedisClient, keys: Keys, stream_ids: Iterable[str]) -> set[str]:
    """Remove the orphans among ``stream_ids`` from the list and return them: a turn whose
    terminal event is written, or whose run is gone (expired after its retention, or lost with
    Redis's data). A running turn always has its run (a worker claims it before it starts), so
    a live turn is never swept. Raises the errors of :data:`~.connection.UNAVAILABLE`."""
    candidates = list(stream_ids)
    if not candidates:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for stream_id in candidates:
            pipe.hmget(keys.run(stream_id), "owner", "ended")
            pipe.xrevrange(keys.events(stream_id), count=1)
        found = await pipe.execute()
    orphans: set[str] = set()
    for n, stream_id in enumerate(candidates):
        (owner, ended), last = found[2 * n], found[2 * n + 1]
        if owner is None or ended is not None or (last and ends(last[0][1])):
            orphans.add(stream_id)
    if orphans:
        await redis.hdel(keys.active, *orphans)
    return orphans


def ends(fields: dict[bytes, bytes]) -> bool:
    """True when a Redis Stream entry of a turn's events holds its terminal event."""
    try:
        return is_terminal(decode_event(fields[b"e"]))
    except (KeyError, RemoteProtocolError):
        return False  # not an event of ours: not evidence that the turn ended
