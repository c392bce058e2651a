"""A tenant's fair share, cluster-wide: the set of its turns queued or running.

The enqueue script (:data:`~.scripts.ENQUEUE`) admits a tenant's turn only while its set
(:meth:`~.keys.Keys.tenant_turns`) holds fewer than its share, and adds the turn in the same
step; the script that appends a turn's terminal event removes it, whoever writes that event
(the worker, a worker taking the turn over, a gateway ending a turn Redis lost). What can still
be left is an orphan: a turn whose terminal event was never appended through that script, or
whose keys are gone (expired, or lost with Redis's data). :func:`sweep_tenant` removes them: a
gateway sweeps a tenant's set before it refuses that tenant, and workers sweep every listed
tenant now and then (:func:`sweep_tenants`), so a lost turn never holds a slot for good.
"""

from __future__ import annotations

from .active_set import ends
from .connection import RedisClient
from .keys import Keys
from .scripts import FORGET_TENANT


async def sweep_tenant(redis: RedisClient, keys: Keys, tenant: str) -> set[str]:
    """Remove the orphans from ``tenant``'s set and return them: a turn whose terminal event
    is written, or whose ``meta`` is gone. A queued turn has its ``meta`` from the moment it
    is enqueued (in the same script) until its retention after the terminal, so a live turn
    is never swept. Raises the errors of :data:`~.connection.UNAVAILABLE`."""
    key = keys.tenant_turns(tenant)
    members = [m.decode() for m in await redis.smembers(key)]
    if not members:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for stream_id in members:
            pipe.exists(keys.meta(stream_id))
            pipe.hget(keys.run(stream_id), "ended")
            pipe.xrevrange(keys.events(stream_id), count=1)
        found = await pipe.execute()
    orphans: set[str] = set()
    for n, stream_id in enumerate(members):
        has_meta, ended, last = found[3 * n : 3 * n + 3]
        if not has_meta or ended is not None or (last and ends(last[0][1])):
            orphans.add(stream_id)
    if orphans:
        await redis.srem(key, *orphans)
    return orphans


async def sweep_tenants(redis: RedisClient, keys: Keys) -> set[str]:
    """:func:`sweep_tenant` for every listed tenant; a tenant left with nothing in flight is
    no longer listed. Returns every orphan removed."""
    forget = redis.register_script(FORGET_TENANT)
    orphans: set[str] = set()
    for raw in await redis.smembers(keys.tenants):
        tenant = raw.decode()
        orphans |= await sweep_tenant(redis, keys, tenant)
        await forget(keys=[keys.tenant_turns(tenant), keys.tenants], args=[tenant])
    return orphans
