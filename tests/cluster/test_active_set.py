"""The cluster's list of running turns (``GET /v1/streams?state=active``) with real gateway
and worker processes and a real redis-server: a turn leaves it when its terminal event is
written, whoever writes it, and orphans are swept."""

from __future__ import annotations

import asyncio
import time

import orjson
import redis.asyncio as aioredis

from tokenwire.protocol import Reason

from ..support.cluster import Cluster, Process, client
from .test_scale_out import GUARD_S, Reader, check_stream


async def listed(gateway: Process) -> list[str]:
    async with client(gateway) as http:
        response = await http.get("/v1/streams", params={"state": "active"})
        assert response.status_code == 200, response.text
        return [turn["stream_id"] for turn in response.json()["streams"]]


async def test_a_turn_ended_by_takeover_leaves_the_active_list(cluster: Cluster) -> None:
    """Issue 13 item 5: the killed worker never removes its turn; the worker that ends it
    ``worker_lost`` does, as it writes the terminal event."""
    gateway_a, gateway_b = await cluster.gateway("gateway-a"), await cluster.gateway("gateway-b")
    first = await cluster.worker("worker-1")
    body = {"prompt": "x", "script": {"tokens": ["so "] * 100, "delay_ms": 100}}
    store = aioredis.from_url(cluster.redis.url)
    try:
        async with asyncio.timeout(GUARD_S), client(gateway_a) as http:
            async with http.stream("POST", "/v1/streams", json=body) as response:
                stream_id = response.headers["x-tokenwire-stream-id"]
                reader = Reader(response)
                await reader.until_text()
                # Listed once its worker runs it (the listing is written just after the start).
                while not await store.hexists("tw:active", stream_id):
                    await reader._more()
                assert stream_id in await listed(gateway_b)
                first.kill()
                await cluster.worker("worker-2")
                done = check_stream(await reader.to_end())
            assert done.reason is Reason.WORKER_LOST
            assert not await store.hexists("tw:active", stream_id)
            assert stream_id not in await listed(gateway_a)
            assert stream_id not in await listed(gateway_b)
    finally:
        await store.aclose()


async def test_orphans_in_the_active_list_are_swept(cluster: Cluster) -> None:
    """Entries no worker will remove: one for a turn whose keys have expired (its run is
    gone), one for a turn whose terminal event is written. Neither is listed, and both are
    removed from Redis; a turn that is really running stays."""
    gateway = await cluster.gateway()
    await cluster.worker("worker-1")
    store = aioredis.from_url(cluster.redis.url)
    summary = {"tenant": "", "route": "scripted", "worker": "gone", "created_at": time.time()}
    try:
        async with asyncio.timeout(GUARD_S), client(gateway) as http:
            ended = await http.post("/v1/streams", json={"prompt": "x", "background": True})
            ended_id = ended.json()["stream_id"]
            async with http.stream("GET", f"/v1/streams/{ended_id}/events") as response:
                check_stream(await Reader(response).to_end())
            running_body = {"prompt": "y", "script": {"tokens": ["t "] * 200, "delay_ms": 100}}
            async with http.stream("POST", "/v1/streams", json=running_body) as response:
                running_id = response.headers["x-tokenwire-stream-id"]
                reader = Reader(response)
                await reader.until_text()
                while not await store.hexists("tw:active", running_id):
                    await reader._more()
                await store.hset("tw:active", ended_id, orjson.dumps(summary))
                await store.hset("tw:active", "st_expired", orjson.dumps(summary))
                assert await listed(gateway) == [running_id]
                assert await store.hkeys("tw:active") == [running_id.encode()]
    finally:
        await store.aclose()
