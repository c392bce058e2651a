"""A resume at the terminal's seq answers the same on every gateway, as soon as the client has
seen the terminal anywhere: real gateway and worker processes, a real redis-server."""

from __future__ import annotations

import asyncio

import httpx

from ..support.cluster import Cluster, client
from .test_scale_out import GUARD_S, Reader, check_stream

TURNS = 40


async def answer(http: httpx.AsyncClient, stream_id: str, after: int) -> tuple[int, bytes]:
    headers = {"Last-Event-ID": str(after)}
    async with http.stream("GET", f"/v1/streams/{stream_id}/events", headers=headers) as reply:
        return reply.status_code, await reply.aread()


async def test_a_resume_at_the_end_answers_alike_on_both_gateways(cluster: Cluster) -> None:
    """Issue 13 item 15. Gateway B already follows the turn (another of its readers), so its
    copy may be one tail read behind when the client, having seen the terminal through A,
    resumes on B at its seq: B must answer as A does (an immediate end), never 400."""
    gateway_a, gateway_b = await cluster.gateway("gateway-a"), await cluster.gateway("gateway-b")
    await cluster.worker("worker-1")
    body = {"prompt": "x", "script": {"tokens": [f"t{i} " for i in range(20)], "delay_ms": 5}}
    limits = httpx.Limits(max_connections=3 * TURNS, max_keepalive_connections=3 * TURNS)
    http_a, http_b = client(gateway_a, limits=limits), client(gateway_b, limits=limits)

    async def one_turn() -> None:
        async with http_a.stream("POST", "/v1/streams", json=body) as response:
            stream_id = response.headers["x-tokenwire-stream-id"]
            reader = Reader(response)
            await reader.until_started()
            async with http_b.stream("GET", f"/v1/streams/{stream_id}/events") as watching:
                watcher = Reader(watching)
                await watcher.until_started()  # B follows the turn now
                done = check_stream(await reader.to_end())
                on_b = await answer(http_b, stream_id, done.seq)
                on_a = await answer(http_a, stream_id, done.seq)
                assert on_b == on_a, (on_a, on_b)
                assert on_a[0] in (200, 204) and b"event:" not in on_a[1]
                check_stream(await watcher.to_end())

    try:
        async with asyncio.timeout(GUARD_S):
            # Many turns at once: B's tail copies many streams per read, as under load.
            await asyncio.gather(*(one_turn() for _ in range(TURNS)))
    finally:
        await http_a.aclose()
        await http_b.aclose()
