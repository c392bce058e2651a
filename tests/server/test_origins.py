"""The Host and Origin allow-lists and CORS (``server/origins.py``) on every kind of endpoint,
against real uvicorn on loopback: the fast path (``POST /v1/streams``), the routed endpoints,
the OpenAI-compatible and AI SDK ones, the UI and the WebSocket handshake."""

from __future__ import annotations

from typing import Any

import pytest
import websockets

from tokenwire.auth import generate_key, hash_key

from .conftest import Live, live_server, settings

ALLOWED = "http://127.0.0.1:5173"
FOREIGN = "http://evil.example"
BODY = {"prompt": "x", "script": {"tokens": ["a"]}}


@pytest.fixture
async def live() -> Any:
    async with live_server(settings(server={"allowed_origins": [ALLOWED]})) as server:
        yield server


ENDPOINTS = [
    ("POST", "/v1/streams", BODY),
    ("GET", "/v1/streams", None),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "user", "content": "x"}]},
    ),
    ("GET", "/v1/models", None),
    (
        "POST",
        "/v1/ai-sdk/chat",
        {"messages": [{"id": "m", "role": "user", "parts": [{"type": "text", "text": "x"}]}]},
    ),
    ("GET", "/", None),
    ("GET", "/healthz", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_a_rebound_host_is_refused_on_every_endpoint(
    live: Live, method: str, path: str, body: Any
) -> None:
    response = await live.client.request(
        method, path, json=body, headers={"host": "attacker.example:8000"}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_host"
    assert live.provider.started == 0


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_a_foreign_origin_is_refused_and_an_allowed_one_gets_cors(
    live: Live, method: str, path: str, body: Any
) -> None:
    refused = await live.client.request(method, path, json=body, headers={"origin": FOREIGN})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden_origin"
    assert "access-control-allow-origin" not in refused.headers
    assert live.provider.started == 0

    allowed = await live.client.request(method, path, json=body, headers={"origin": ALLOWED})
    assert allowed.status_code < 400, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "Origin" in allowed.headers["vary"]
    assert "Tokenwire-Stream-Token" in allowed.headers["access-control-expose-headers"]


@pytest.mark.parametrize("path", ["/v1/streams", "/v1/chat/completions", "/v1/ai-sdk/chat"])
async def test_preflights(live: Live, path: str) -> None:
    asked = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, authorization, x-stainless-os",
    }
    ok = await live.client.options(path, headers={"origin": ALLOWED, **asked})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert ok.headers["access-control-allow-headers"] == asked["access-control-request-headers"]
    assert ok.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in ok.headers

    refused = await live.client.options(path, headers={"origin": FOREIGN, **asked})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


async def test_same_origin_and_no_origin_pass_and_loopback_names_are_served(live: Live) -> None:
    port = live.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
        same = await live.client.post(
            "/v1/streams", json=BODY, headers={"host": host, "origin": f"http://{host}"}
        )
        assert same.status_code == 200, host
        assert "access-control-allow-origin" not in same.headers
    bare = await live.client.post("/v1/streams", json=BODY)  # curl, an SDK: no Origin
    assert bare.status_code == 200


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_body_that_is_not_labelled_json_is_415(
    live: Live, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    for path in ("/v1/streams", "/v1/ai-sdk/chat", "/v1/conversations"):
        response = await live.client.post(path, content=b'{"prompt": "x"}', headers=headers)
        assert response.status_code == 415, (path, response.text)
        assert response.json()["error"]["code"] == "unsupported_media_type"
    openai = await live.client.post("/v1/chat/completions", content=b"{}", headers=headers)
    assert openai.status_code == 415 and openai.json()["error"]["code"] == "unsupported_media_type"
    assert live.provider.started == 0
    labelled = await live.client.post(
        "/v1/streams",
        content=b'{"prompt": "x"}',
        headers={"content-type": "application/vnd.tokenwire+json; charset=utf-8"},
    )
    assert labelled.status_code == 200


async def test_the_websocket_handshake_from_a_foreign_origin_is_refused_before_accept(
    live: Live,
) -> None:
    url = live.url.replace("http://", "ws://") + "/v1/ws"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, origin=FOREIGN):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    assert b"forbidden_origin" in refused.value.response.body
    with pytest.raises(websockets.InvalidStatus) as rebound:
        async with websockets.connect(url, additional_headers={"Host": "attacker.example"}):
            pass
    assert rebound.value.response.status_code == 403
    async with websockets.connect(url, origin=ALLOWED) as socket:  # type: ignore[arg-type]
        await socket.send('{"type": "generate", "request_id": "r", "prompt": "x"}')
        assert '"start"' in str(await socket.recv())


async def test_with_auth_on_any_host_and_origin_may_call_with_a_key() -> None:
    key = generate_key()
    config = settings(auth={"keys": [{"tenant": "acme", "hash": hash_key(key)}]})
    async with live_server(config) as live:
        headers = {"host": "gateway.example", "origin": FOREIGN}
        keyless = await live.client.post("/v1/streams", json=BODY, headers=headers)
        assert keyless.status_code == 401
        assert keyless.headers["access-control-allow-origin"] == FOREIGN  # readable refusal
        keyed = await live.client.post(
            "/v1/streams", json=BODY, headers={**headers, "authorization": f"Bearer {key}"}
        )
        assert keyed.status_code == 200
        assert "access-control-allow-credentials" not in keyed.headers


async def test_configured_lists_replace_the_defaults() -> None:
    config = settings(
        server={
            "allowed_hosts": ["*.corp.example", "127.0.0.1"],
            "allowed_origins": ["https://app.corp.example:443/"],
            "cors_allow_credentials": True,
        }
    )
    async with live_server(config) as live:
        sub = await live.client.get("/v1/streams", headers={"host": "gw.corp.example"})
        assert sub.status_code == 200
        other = await live.client.get("/v1/streams", headers={"host": "localhost"})
        assert other.status_code == 403
        cors = await live.client.get("/v1/streams", headers={"origin": "https://app.corp.example"})
        assert cors.headers["access-control-allow-credentials"] == "true"


def test_the_lists_are_checked_when_the_config_loads() -> None:
    with pytest.raises(ValueError, match="allowed_origins"):
        settings(server={"allowed_origins": ["app.example/path"]})
    with pytest.raises(ValueError, match="allowed_hosts"):
        settings(server={"allowed_hosts": ["http://x"]})
