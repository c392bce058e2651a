"""The tutorial pass-through proxy: FastAPI + httpx, relaying an OpenAI stream byte for byte.

    UPSTREAM=http://127.0.0.1:8101/v1 uvicorn naive_proxy:app --app-dir bench --port 8102
    python bench/naive_proxy.py --upstream http://127.0.0.1:8101/v1 --port 8102

Kept as a peer for the relay benchmark: this is what most teams write first.
"""

import argparse
import os

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8101/v1")

# httpx's default pool caps at 100 connections, which would cap the proxy at 100 streams
# whatever its CPU; a proxy meant to hold 1,000 streams raises it.
LIMITS = httpx.Limits(max_connections=5000, max_keepalive_connections=5000)

app = FastAPI()
client = httpx.AsyncClient(base_url=UPSTREAM, timeout=httpx.Timeout(60.0), limits=LIMITS)


@app.post("/v1/chat/completions")
async def chat_completions(request: Request) -> StreamingResponse:
    body = await request.body()
    upstream_req = client.build_request(
        "POST", "/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    upstream = await client.send(upstream_req, stream=True)

    async def relay():
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()

    return StreamingResponse(
        relay(), status_code=upstream.status_code, media_type="text/event-stream"
    )


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


if __name__ == "__main__":
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--upstream", default=UPSTREAM)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8102)
    a = p.parse_args()
    client = httpx.AsyncClient(base_url=a.upstream, timeout=httpx.Timeout(60.0), limits=LIMITS)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", access_log=False)
