"""Access control over real HTTP and WebSocket: API keys are tenants; another tenant's stream
(events, cancel, status, record) answers exactly like one that does not exist; browsers open a
stream's events with its short-lived token; a non-loopback bind without keys refuses to start."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from tokenwire.auth import generate_key, hash_key

from .conftest import Live, live_server, read_sse, settings

KEY_A, KEY_A2, KEY_B = generate_key(), generate_key(), generate_key()


def auth_settings(**overrides: Any) -> Any:
    return settings(
        auth={
            "keys": [
                {"tenant": "acme", "hash": hash_key(KEY_A), "name": "acme-1"},
                {"tenant": "acme", "hash": hash_key(KEY_A2), "name": "acme-2"},
                {"tenant": "globex", "hash": hash_key(KEY_B)},
            ]
        },
        **overrides,
    )


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    async with live_server(auth_settings()) as server:
        yield server


HANG = {
    "prompt": "x",
    "background": True,
    "script": {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}},
}


async def test_requests_without_a_valid_key_get_401_json(live: Live) -> None:
    for headers in ({}, as_("tw_not-a-real-key"), {"X-API-Key": "nope"}):
        response = await live.client.post("/v1/streams", json={"prompt": "x"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    for path in ("/v1/streams", "/v1/conversations", "/v1/streams/tw_x"):
        assert (await live.client.get(path)).status_code == 401
    assert (await live.client.get("/healthz")).status_code == 200
    assert live.provider.started == 0


async def test_another_tenant_gets_the_same_404_as_for_a_stream_that_does_not_exist(
    live: Live,
) -> None:
    started = await live.client.post("/v1/streams", json=HANG, headers=as_(KEY_A))
    assert started.status_code == 202
    stream_id = started.json()["stream_id"]
    guessed = "tw_" + secrets.token_hex(16)
    for target in (stream_id, guessed):
        for method, path in (
            ("GET", f"/v1/streams/{target}"),
            ("GET", f"/v1/streams/{target}/events"),
            ("POST", f"/v1/streams/{target}/cancel"),
        ):
            response = await live.client.request(method, path, headers=as_(KEY_B))
            assert response.status_code == 404, (method, path)
            assert response.json()["error"]["code"] == "unknown_stream"
    # What B got for A's real id is byte-identical to what it got for a made-up one, but for
    # the id itself.
    real = await live.client.get(f"/v1/streams/{stream_id}", headers=as_(KEY_B))
    fake = await live.client.get(f"/v1/streams/{guessed}", headers=as_(KEY_B))
    assert real.text.replace(stream_id, "ID") == fake.text.replace(guessed, "ID")
    listed = await live.client.get("/v1/streams", headers=as_(KEY_B))
    assert listed.json()["streams"] == []
    # A's other key is the same tenant: it sees and stops the stream.
    mine = await live.client.get(f"/v1/streams/{stream_id}", headers=as_(KEY_A2))
    assert mine.status_code == 200 and mine.json()["state"] == "active"
    cancel = await live.client.post(f"/v1/streams/{stream_id}/cancel", headers=as_(KEY_A))
    assert cancel.json()["cancelled"] is True


async def test_the_stored_record_is_tenant_scoped_too() -> None:
    async with live_server(auth_settings(limits={"max_retained_streams": 0})) as live:
        body = {"prompt": "x", "script": {"tokens": ["a"]}}
        async with live.client.stream("POST", "/v1/streams", json=body, headers=as_(KEY_A)) as r:
            events = await read_sse(r)
        stream_id = events[0].stream_id
        # Its events have left memory: the status comes from the store.
        mine = await live.client.get(f"/v1/streams/{stream_id}", headers=as_(KEY_A))
        assert mine.status_code == 200 and mine.json()["record"]["answer"] == "a"
        theirs = await live.client.get(f"/v1/streams/{stream_id}", headers=as_(KEY_B))
        assert theirs.status_code == 404


async def test_a_browser_opens_events_with_the_stream_token_only(live: Live) -> None:
    started = await live.client.post(
        "/v1/streams", json={**HANG, "script": {"tokens": ["a", "b"]}}, headers=as_(KEY_A)
    )
    stream_id, token = started.json()["stream_id"], started.json()["stream_token"]
    assert started.headers["tokenwire-stream-token"] == token
    assert KEY_A not in token
    async with live.client.stream(
        "GET", f"/v1/streams/{stream_id}/events", params={"token": token}
    ) as response:
        assert response.status_code == 200
        events = await read_sse(response)
    assert events[-1].type == "done"
    # The token opens that stream's events and status, nothing else.
    assert (
        await live.client.get(f"/v1/streams/{stream_id}", params={"token": token})
    ).status_code == 200
    assert (
        await live.client.post(f"/v1/streams/{stream_id}/cancel", params={"token": token})
    ).status_code == 401
    other = await live.client.post("/v1/streams", json=HANG, headers=as_(KEY_A))
    response = await live.client.get(
        f"/v1/streams/{other.json()['stream_id']}/events", params={"token": token}
    )
    assert response.status_code == 401
    assert (await live.client.get("/v1/conversations", params={"token": token})).status_code == 401
    # An API key in the URL is refused (it would end up in logs).
    response = await live.client.get(f"/v1/streams/{stream_id}", params={"token": KEY_A})
    assert response.status_code == 401


async def test_sse_post_carries_the_stream_token_header(live: Live) -> None:
    body = {"prompt": "x", "script": {"tokens": ["a"]}}
    async with live.client.stream("POST", "/v1/streams", json=body, headers=as_(KEY_A)) as r:
        token = r.headers["tokenwire-stream-token"]
        events = await read_sse(r)
    stream_id = events[0].stream_id
    replay = await live.client.get(f"/v1/streams/{stream_id}/events", params={"token": token})
    assert replay.status_code == 200 and "event: done" in replay.text


async def test_websocket_needs_a_key_and_is_tenant_scoped(live: Live) -> None:
    ws_url = live.url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(ws_url) as ws:
        refusal = json.loads(await ws.recv())
        assert refusal["type"] == "error" and refusal["code"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    started = await live.client.post("/v1/streams", json=HANG, headers=as_(KEY_A))
    stream_id = started.json()["stream_id"]
    async with websockets.connect(ws_url, additional_headers=as_(KEY_B)) as ws:
        await ws.send(
            json.dumps(
                {"type": "resume", "request_id": "r1", "after_seq": 0, "stream_id": stream_id}
            )
        )
        answer = json.loads(await ws.recv())
        assert answer["type"] == "error" and answer["code"] == "unknown_stream"
        await ws.send(
            json.dumps(
                {"type": "generate", "request_id": "r2", "prompt": "x", "script": {"tokens": ["b"]}}
            )
        )
        frames = [json.loads(await ws.recv())]
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(await ws.recv()))
        assert frames[-1]["type"] == "done" and frames[-1]["answer"] == "b"
    await live.client.post(f"/v1/streams/{stream_id}/cancel", headers=as_(KEY_A))


async def test_a_browser_sends_its_key_as_a_websocket_subprotocol(live: Live) -> None:
    ws_url = live.url.replace("http", "ws") + "/v1/ws"
    offered = ["tokenwire.v1", f"tokenwire.bearer.{KEY_A}"]
    started = await live.client.post("/v1/streams", json=HANG, headers=as_(KEY_A))
    stream_id = started.json()["stream_id"]
    async with websockets.connect(ws_url, subprotocols=offered) as ws:  # type: ignore[arg-type]
        # The key is never echoed back: the server selects the plain protocol.
        assert ws.subprotocol == "tokenwire.v1"
        resume = {"type": "resume", "request_id": "r1", "after_seq": 0, "stream_id": stream_id}
        await ws.send(json.dumps(resume))
        assert json.loads(await ws.recv())["type"] == "start"  # acme's own stream
    # A wrong key as a subprotocol is refused like a wrong header, on a socket that still
    # completes its handshake (a browser would see nothing otherwise).
    wrong = ["tokenwire.v1", "tokenwire.bearer.tw_not_a_key"]
    async with websockets.connect(ws_url, subprotocols=wrong) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "tokenwire.v1"
        refusal = json.loads(await ws.recv())
        assert refusal["type"] == "error" and refusal["code"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    # Two different keys (header and subprotocol) are refused rather than one picked.
    async with websockets.connect(
        ws_url,
        subprotocols=["tokenwire.v1", f"tokenwire.bearer.{KEY_B}"],  # type: ignore[list-item]
        additional_headers=as_(KEY_A),
    ) as ws:
        assert json.loads(await ws.recv())["code"] == "unauthorized"
    await live.client.post(f"/v1/streams/{stream_id}/cancel", headers=as_(KEY_A))


async def test_conversations_are_tenant_scoped(live: Live) -> None:
    created = await live.client.post("/v1/conversations", json={}, headers=as_(KEY_A))
    cid = created.json()["id"]
    assert (
        await live.client.get(f"/v1/conversations/{cid}", headers=as_(KEY_B))
    ).status_code == 404
    assert (await live.client.get("/v1/conversations", headers=as_(KEY_B))).json()[
        "conversations"
    ] == []
    body = {"prompt": "x", "conversation_id": cid, "script": {"tokens": ["a"]}}
    response = await live.client.post("/v1/streams", json=body, headers=as_(KEY_B))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "conversation_not_found"
    assert (
        await live.client.get(f"/v1/conversations/{cid}", headers=as_(KEY_A2))
    ).status_code == 200


def test_serving_a_public_address_without_keys_refuses_to_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenwire.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "0.0.0.0" in result.stderr and "tokenwire keys new" in result.stderr


def test_keys_new_prints_a_key_once_and_config_with_its_hash() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenwire.cli", "keys", "new", "--tenant", "acme"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    key = next(w for w in result.stderr.split() if w.startswith("tw_"))
    assert key not in result.stdout
    assert f'hash = "{hash_key(key)}"' in result.stdout
    assert 'tenant = "acme"' in result.stdout


async def test_an_unknown_key_cannot_learn_whether_a_stream_exists(live: Live) -> None:
    started = await live.client.post("/v1/streams", json=HANG, headers=as_(KEY_A))
    stream_id = started.json()["stream_id"]
    async with httpx.AsyncClient(base_url=live.url) as anonymous:
        real = await anonymous.get(f"/v1/streams/{stream_id}")
        fake = await anonymous.get("/v1/streams/tw_" + secrets.token_hex(16))
    assert real.status_code == fake.status_code == 401
    assert real.json() == fake.json()
    await live.client.post(f"/v1/streams/{stream_id}/cancel", headers=as_(KEY_A))
