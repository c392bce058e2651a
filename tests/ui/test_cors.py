"""Who may drive the server from a browser, in a real Chromium: a page served from another
loopback port, once from an allowed origin (``http://127.0.0.1:P``) and once from a foreign one
(``http://localhost:P``, the same server under another origin), calls tokenwire with fetch,
EventSource and WebSocket. And a browser's EventSource on tokenwire's own streams: a finished
stream stops it reconnecting (204), and the terminal failure reaches the page as the protocol's
event, not as EventSource's connection error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from ..server.conftest import Live, live_server, settings
from ..support.server import serve
from .test_ui import WAIT_MS, browser, chromium

try:
    from playwright.async_api import Browser, Page
except ImportError:  # pragma: no cover - the dev extra installs it
    pass

__all__ = ["browser", "chromium"]  # the fixtures, used here by name

SCRIPT = {"tokens": ["Hel", "lo"]}

FETCH_POST = """async ([base, contentType]) => {
  try {
    const response = await fetch(base + "/v1/streams", {
      method: "POST",
      headers: { "Content-Type": contentType },
      body: JSON.stringify({ prompt: "hi", script: { tokens: ["Hel", "lo"] } }),
    });
    return {
      status: response.status,
      body: await response.text(),
      streamId: response.headers.get("X-Tokenwire-Stream-Id"),
    };
  } catch (error) {
    return { blocked: String(error) };
  }
}"""

SIMPLE_POST = """async (base) => {
  // A "simple" request: no preflight, the page cannot read the answer, but it is sent.
  await fetch(base + "/v1/streams", {
    method: "POST", mode: "no-cors", body: JSON.stringify({ prompt: "hi" }),
  }).catch(() => {});
  return true;
}"""

EVENT_SOURCE = """([url, names]) => new Promise((resolve) => {
  const seen = [];
  const connectionErrors = [];
  const source = new EventSource(url);
  for (const name of names) {
    source.addEventListener(name, (event) => {
      seen.push([name, JSON.parse(event.data).type]);
    });
  }
  source.addEventListener("error", (event) => {
    if (event.data !== undefined) {
      seen.push(["error", "a message named error"]);
      return;
    }
    connectionErrors.push(source.readyState);
    // CLOSED: EventSource gave up and will never reconnect (a 204, a refusal).
    if (source.readyState === EventSource.CLOSED) resolve({ seen, connectionErrors });
  });
})"""

WEBSOCKET = """(url) => new Promise((resolve) => {
  const frames = [];
  const socket = new WebSocket(url, ["tokenwire.v1"]);
  socket.onopen = () => socket.send(JSON.stringify({
    type: "generate", request_id: "r1", prompt: "hi", script: { tokens: ["a", "b"] },
  }));
  socket.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    frames.push(frame.type);
    if (frame.type === "done" || frame.type === "error") socket.close();
  };
  socket.onclose = (close) => resolve({ frames, code: close.code });
})"""


def page_app() -> Starlette:
    async def index(_request: Any) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>another app</title><p>another app</p>")

    return Starlette(routes=[Route("/", index)])


@contextlib.asynccontextmanager
async def two_origins() -> AsyncIterator[tuple[Live, str, str]]:
    """tokenwire allowing ``http://127.0.0.1:P``, and the page server on P: yields the live
    server, the allowed origin and a foreign one (``http://localhost:P``, same page)."""
    async with serve(page_app()) as page_url:
        port = page_url.rsplit(":", 1)[1]
        allowed, foreign = f"http://127.0.0.1:{port}", f"http://localhost:{port}"
        config = settings(server={"allowed_origins": [allowed]})
        async with live_server(config) as live:
            yield live, allowed, foreign


async def evaluate(page: Page, script: str, arg: Any) -> Any:
    """``page.evaluate``, with a guard that stops a hung test (the page's promise never
    settling is the failure: an EventSource reconnecting forever)."""
    async with asyncio.timeout(60):
        return await page.evaluate(script, arg)


async def open_page(browser: Browser, url: str) -> Page:
    page = await browser.new_page()
    page.set_default_timeout(WAIT_MS)
    await page.goto(url + "/")
    return page


async def test_an_allowed_origin_drives_the_server_with_fetch_eventsource_and_websocket(
    browser: Browser,
) -> None:
    async with two_origins() as (live, allowed, _foreign):
        page = await open_page(browser, allowed)
        posted = await evaluate(page, FETCH_POST, [live.url, "application/json"])
        assert posted["status"] == 200, posted
        assert "event: done" in posted["body"] and '"answer":"Hello"' in posted["body"]
        assert posted["streamId"], "the stream id header is exposed to the page"

        events = f"{live.url}/v1/streams/{posted['streamId']}/events?after=0"
        read = await evaluate(page, EVENT_SOURCE, [events, ["start", "text.delta", "done"]])
        assert read["seen"][0] == ["start", "start"] and read["seen"][-1] == ["done", "done"]

        ws_url = live.url.replace("http://", "ws://") + "/v1/ws"
        socket = await evaluate(page, WEBSOCKET, ws_url)
        assert socket["frames"][0] == "start" and socket["frames"][-1] == "done"

        # A JSON type is required even from an allowed origin.
        plain = await evaluate(page, FETCH_POST, [live.url, "text/plain"])
        assert plain["status"] == 415
        assert '"unsupported_media_type"' in plain["body"]
        await page.close()


async def test_a_foreign_origin_is_refused_everywhere_and_starts_nothing(
    browser: Browser,
) -> None:
    async with two_origins() as (live, _allowed, foreign):
        page = await open_page(browser, foreign)
        posted = await evaluate(page, FETCH_POST, [live.url, "application/json"])
        assert "blocked" in posted, posted  # the preflight was refused

        await evaluate(page, SIMPLE_POST, live.url)

        # A stream that exists, made by a client with no Origin (curl, an SDK).
        async with live.client.stream(
            "POST", "/v1/streams", json={"prompt": "x", "script": SCRIPT}
        ) as response:
            stream_id = response.headers["x-tokenwire-stream-id"]
            await response.aread()
        events = f"{live.url}/v1/streams/{stream_id}/events?after=0"
        read = await evaluate(page, EVENT_SOURCE, [events, ["start", "done"]])
        assert read["seen"] == [], "nothing of the stream reached the foreign page"

        ws_url = live.url.replace("http://", "ws://") + "/v1/ws"
        socket = await evaluate(page, WEBSOCKET, ws_url)
        assert socket["frames"] == [] and socket["code"] == 1006  # refused in the handshake

        # Only the no-Origin client's turn ever started.
        assert live.provider.started == 1
        await page.close()


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    async with live_server(settings()) as server:
        yield server


async def test_eventsource_stops_at_a_finished_stream_instead_of_reconnecting_forever(
    browser: Browser, live: Live
) -> None:
    async with live.client.stream(
        "POST", "/v1/streams", json={"prompt": "x", "script": SCRIPT}
    ) as response:
        stream_id = response.headers["x-tokenwire-stream-id"]
        await response.aread()
    page = await open_page(browser, live.url)  # tokenwire's own origin
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    events = f"{live.url}/v1/streams/{stream_id}/events"
    read = await evaluate(page, EVENT_SOURCE, [events, ["start", "done"]])
    assert read["seen"][0] == ["start", "start"] and read["seen"][-1] == ["done", "done"]
    # The stream ended; EventSource reconnected once with the last id, got 204, and closed.
    assert [url for url in requests if url == events] == [events, events]
    assert read["connectionErrors"][-1] == 2  # EventSource.CLOSED
    await page.close()


async def test_a_failed_turn_reaches_eventsource_as_turn_error_not_as_a_connection_error(
    browser: Browser, live: Live
) -> None:
    script = {"tokens": ["a"], "fault": {"kind": "fail", "at": 0, "retryable": False}}
    async with live.client.stream(
        "POST", "/v1/streams", json={"prompt": "x", "script": script}
    ) as response:
        stream_id = response.headers["x-tokenwire-stream-id"]
        await response.aread()
    page = await open_page(browser, live.url)
    events = f"{live.url}/v1/streams/{stream_id}/events"
    read = await evaluate(page, EVENT_SOURCE, [events, ["start", "turn.error"]])
    assert read["seen"] == [["start", "start"], ["turn.error", "error"]]
    await page.close()
