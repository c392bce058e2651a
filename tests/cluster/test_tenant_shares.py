"""Fair shares across a scale-out deployment (issue 13 item 13): a tenant's turns queued or
running anywhere in the cluster stay within ``[limits] max_active_turns_per_tenant``, with real
gateway and worker processes and a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import redis.asyncio as aioredis

from tokenwire.auth import generate_key, hash_key
from tokenwire.protocol import Event

from ..support.cluster import Cluster, Process, client
from .test_scale_out import GUARD_S, check_stream, read_events

SHARE = 2

BODY = {"prompt": "x", "script": {"tokens": ["ok"]}, "background": True}


def with_tenants(cluster: Cluster, *tenants: str) -> dict[str, dict[str, str]]:
    """Auth on, one key per tenant, a share of ``SHARE`` turns each (and room for more in the
    cluster): the headers each tenant's requests carry."""
    headers = {}
    for tenant in tenants:
        key = generate_key()
        cluster.config += f'\n[[auth.keys]]\ntenant = "{tenant}"\nhash = "{hash_key(key)}"\n'
        headers[tenant] = {"Authorization": f"Bearer {key}"}
    cluster.config += f"\n[limits]\nmax_active_turns = 10\nmax_active_turns_per_tenant = {SHARE}\n"
    return headers


async def post(http: httpx.AsyncClient, headers: dict[str, str], **extra: Any) -> httpx.Response:
    return await http.post("/v1/streams", json=BODY, headers={**headers, **extra})


async def replay_as(gateway: Process, headers: dict[str, str], stream_id: str) -> list[Event]:
    async with client(gateway, headers=headers) as http:
        async with http.stream("GET", f"/v1/streams/{stream_id}/events") as response:
            assert response.status_code == 200, await response.aread()
            return await read_events(response)


async def test_a_tenant_that_filled_its_share_is_refused_cluster_wide(cluster: Cluster) -> None:
    tenants = with_tenants(cluster, "acme", "globex")
    acme, globex = tenants["acme"], tenants["globex"]
    gateway_a, gateway_b = await cluster.gateway("gateway-a"), await cluster.gateway("gateway-b")
    async with asyncio.timeout(GUARD_S), client(gateway_a) as http_a, client(gateway_b) as http_b:
        # No worker yet: the turns wait in the queue, and count against acme's share.
        first = await post(http_a, acme)
        second = await post(http_b, acme)
        assert first.status_code == second.status_code == 202
        keyed = {"Idempotency-Key": "acme-3"}
        for http in (http_a, http_b):  # on either gateway: the share is the cluster's
            refused = await post(http, acme, **keyed)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "overloaded"
            assert "share" in refused.json()["error"]["message"]
            assert float(refused.headers["retry-after"]) > 0
        # Another tenant still gets turns.
        other = await post(http_b, globex)
        assert other.status_code == 202, other.text
        await cluster.worker("worker-1")
        for queued in (first, second):
            events = await replay_as(gateway_b, acme, queued.json()["stream_id"])
            assert check_stream(events).answer == "ok"
        # Its turns ended (their terminal freed their slots as it was written): admitted again,
        # and the refused request's key did not stick, so the retry starts its turn.
        again = await post(http_a, acme, **keyed)
        assert again.status_code == 202, again.text
        assert not again.json()["joined"]
        events = await replay_as(gateway_a, acme, again.json()["stream_id"])
        assert check_stream(events).answer == "ok"


async def test_a_turn_lost_without_its_terminal_does_not_hold_a_slot(cluster: Cluster) -> None:
    """Entries of acme's share no script will remove: a turn whose keys are gone (expired, or
    lost with Redis's data) and one whose terminal is written. They are swept before acme
    would be refused, so acme gets its turn; a turn really queued is never swept."""
    acme = with_tenants(cluster, "acme")["acme"]
    gateway = await cluster.gateway()
    store = aioredis.from_url(cluster.redis.url)
    share_key = "tw:tenant:acme:turns"
    try:
        async with asyncio.timeout(GUARD_S), client(gateway) as http:
            first = await post(http, acme)
            assert first.status_code == 202
            await store.sadd(share_key, "st_lost")  # no meta: nothing of it is left in Redis
            second = await post(http, acme)
            assert second.status_code == 202, second.text
            queued = {first.json()["stream_id"], second.json()["stream_id"]}
            assert {m.decode() for m in await store.smembers(share_key)} == queued
            # Two turns really queued (no worker yet): not orphans, the share is full.
            refused = await post(http, acme)
            assert refused.status_code == 503, refused.text
            worker = await cluster.worker("worker-1")
            for stream_id in queued:
                assert check_stream(await replay_as(gateway, acme, stream_id)).answer == "ok"
            await worker.terminate()  # no worker's sweep: the gateway's own must do
            # Both slots held by entries no terminal will remove: a turn that ended, and one
            # whose keys are gone.
            await store.sadd(share_key, "st_lost", first.json()["stream_id"])
            admitted = await post(http, acme)
            assert admitted.status_code == 202, admitted.text
            held = {m.decode() for m in await store.smembers(share_key)}
            assert held == {admitted.json()["stream_id"]}
    finally:
        await store.aclose()


async def test_workers_sweep_the_shares_of_tenants_that_do_not_come_back(
    cluster: Cluster,
) -> None:
    """An orphan in the share of a tenant that sends nothing more is removed all the same (a
    worker's sweep, once a lease), and the tenant is no longer listed for the sweep."""
    with_tenants(cluster, "acme")
    store = aioredis.from_url(cluster.redis.url)
    try:
        await store.sadd("tw:tenant:acme:turns", "st_lost")
        await store.sadd("tw:tenants", "acme")
        async with asyncio.timeout(GUARD_S):
            await cluster.worker("worker-1")
            # No event crosses the processes: watch Redis until the sweep has run.
            while await store.exists("tw:tenant:acme:turns", "tw:tenants"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await store.aclose()
