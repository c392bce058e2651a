"""The browser UI (``server/ui.py`` and ``server/static``), driven in a real headless Chromium
against a live server on the scripted provider.

Every wait is on DOM state (Playwright's ``expect`` and ``wait_for_*``), never a sleep; the
scripts make each scenario deterministic (a ``hang`` fault holds a turn mid-stream for as long
as a test needs). Every page's console errors and uncaught exceptions fail the test.

Debian's ``/usr/bin/chromium`` is driven by Playwright (Playwright's own browser download is
not used). Without it the browser tests are skipped, except under ``CI=true``, where they fail.
Set ``TOKENWIRE_SCREENSHOT=docs/ui.png`` to write the README screenshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tokenwire import Settings
from tokenwire.auth import generate_key, hash_key

from ..server.conftest import Live, live_server, settings

try:
    from playwright.async_api import Browser, Locator, Page, async_playwright, expect
except ImportError:  # pragma: no cover - the dev extra installs it
    async_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000
"""How long a DOM condition may take before the test fails (a guard, not a sync)."""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium, with Playwright to drive it: skipped without them (failed on CI)."""
    if async_playwright is None:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class UI:
    """One browser page on the UI of a live server, with its console errors collected."""

    page: Page
    live: Live
    errors: list[str] = field(default_factory=list)

    @property
    def turns(self) -> Locator:
        return self.page.locator("article.turn")

    async def configure(
        self,
        *,
        script: dict[str, Any] | None = None,
        transport: str | None = None,
        insights: str | None = None,
    ) -> None:
        """Set the options the next turns are sent with, through the settings form."""
        page = self.page
        if transport is not None:
            await page.get_by_label("WebSocket" if transport == "ws" else "SSE").check()
        if script is not None or insights is not None:
            await page.locator("#options summary").click()
            if insights is not None:
                await page.locator("#insights").select_option(insights)
            if script is not None:
                await page.locator("#extra").fill(json.dumps({"script": script}))
            await page.locator("#options summary").click()

    async def ask(self, prompt: str, **options: Any) -> Locator:
        """Send a message (Enter in the composer); returns its turn."""
        if options:
            await self.configure(**options)
        before = await self.turns.count()
        box = self.page.locator("#message")
        await box.fill(prompt)
        await box.press("Enter")
        await expect(self.turns).to_have_count(before + 1)
        return self.turns.nth(before)

    async def finished(self, turn: Locator) -> Locator:
        await expect(turn).to_have_attribute("data-state", "finished")
        return turn


@contextlib.asynccontextmanager
async def open_ui(browser: Browser, config: Settings | None = None) -> AsyncIterator[UI]:
    async with live_server(config or settings()) as live:
        page = await browser.new_page(viewport={"width": 1180, "height": 760})
        ui = UI(page, live)
        page.on("console", lambda m: ui.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: ui.errors.append(f"pageerror: {exc}"))
        await page.goto(live.url + "/")
        await expect(page.locator("#message")).to_be_editable()
        try:
            yield ui
        finally:
            await page.close()
        assert ui.errors == [], ui.errors


def answer_of(turn: Locator) -> Locator:
    return turn.locator(".answer-text")


def hanging(tokens: list[str], **more: Any) -> dict[str, Any]:
    """A script that streams ``tokens`` and then hangs until it is stopped."""
    return {"tokens": [*tokens, "never"], "fault": {"kind": "hang", "at": len(tokens)}, **more}


TRANSPORTS = pytest.mark.parametrize("transport", ["sse", "ws"])


# -- streaming -------------------------------------------------------------------------------


@TRANSPORTS
async def test_a_turn_streams_into_the_page(browser: Browser, transport: str) -> None:
    tokens = ["Clear ", "emails ", "<b>use</b> ", "short\n", "sentences", " & one ask."]
    async with open_ui(browser) as ui:
        # Every node ever removed from an answer: a re-render would remove some.
        await ui.page.evaluate(
            """() => {
                window.removedText = 0;
                new MutationObserver((records) => {
                    for (const r of records) if (r.target.classList?.contains("answer-text"))
                        window.removedText += r.removedNodes.length;
                }).observe(document.getElementById("turns"), {childList: true, subtree: true});
            }"""
        )
        turn = await ui.ask(
            "How do I write clear emails?",
            transport=transport,
            script={"tokens": tokens, "delay_ms": 30},
        )
        # Mid-stream: some text, the blinking cursor, the answer marked busy.
        await expect(answer_of(turn)).to_contain_text("Clear")
        await expect(turn.locator(".cursor")).to_be_visible()
        await ui.finished(turn)
        assert await answer_of(turn).text_content() == "".join(tokens)
        assert await turn.locator(".answer-text b").count() == 0  # text, never markup
        await expect(turn.locator(".cursor")).to_have_count(0)
        await expect(turn.locator(".answer")).to_have_attribute("aria-busy", "false")
        await expect(turn).to_have_attribute("data-kind", "ok")
        await expect(turn.locator(".badge")).to_have_text("Completed")
        await expect(turn.locator(".metrics")).to_contain_text("TTFT")
        await expect(turn.locator(".metrics")).to_contain_text("tok/s")
        await expect(turn.locator(".metrics")).to_contain_text("6 tokens")
        assert await ui.page.evaluate("window.removedText") == 0
        nodes = await answer_of(turn).evaluate("(el) => [...el.childNodes].map((n) => n.nodeType)")
        assert set(nodes) == {3}  # appended text nodes only


@TRANSPORTS
async def test_stop_cancels_the_turn_and_its_upstream(browser: Browser, transport: str) -> None:
    async with open_ui(browser) as ui:
        turn = await ui.ask(
            "Tell me everything.", transport=transport, script=hanging(["So, ", "first"])
        )
        await expect(answer_of(turn)).to_have_text("So, first")
        await turn.get_by_role("button", name="Stop").click()
        await ui.finished(turn)
        await expect(turn).to_have_attribute("data-reason", "cancelled")
        await expect(turn).to_have_attribute("data-kind", "partial")
        await expect(turn.locator(".badge")).to_have_text("Stopped")
        async with asyncio.timeout(WAIT_MS / 1000):
            await ui.live.provider.wait_aborted()
        assert await answer_of(turn).text_content() == "So, first"
        await expect(turn.get_by_role("button", name="Stop")).to_have_count(0)


@TRANSPORTS
async def test_several_turns_stream_at_once(browser: Browser, transport: str) -> None:
    async with open_ui(browser) as ui:
        turns = [
            await ui.ask(f"Question {n}", transport=transport, script=hanging([f"{n}a ", f"{n}b"]))
            for n in range(3)
        ]
        # All three are mid-stream at the same time: each holds its text and is still running.
        for n, turn in enumerate(turns):
            await expect(answer_of(turn)).to_have_text(f"{n}a {n}b")
        for turn in turns:
            await expect(turn).to_have_attribute("data-state", "streaming")
        for turn in turns:
            await turn.get_by_role("button", name="Stop").click()
        for n, turn in enumerate(turns):
            await ui.finished(turn)
            await expect(turn).to_have_attribute("data-reason", "cancelled")
            assert await answer_of(turn).text_content() == f"{n}a {n}b"
        async with asyncio.timeout(WAIT_MS / 1000):
            await ui.live.provider.wait_aborted(3)


async def test_finished_turns_are_the_history_of_the_next(browser: Browser) -> None:
    async with open_ui(browser) as ui:
        page = ui.page

        async def sent_with(prompt: str, tokens: list[str]) -> Any:
            """Ask ``prompt``; returns the JSON body the page POSTed for it."""

            def is_turn(request: Any) -> bool:
                return request.method == "POST" and request.url.endswith("/v1/streams")

            async with page.expect_request(is_turn) as posted:
                turn = await ui.ask(prompt, script={"tokens": tokens})
            await ui.finished(turn)
            return (await posted.value).post_data_json

        first = await sent_with("Capital of France?", ["Paris."])
        assert first["messages"] == [{"role": "user", "content": "Capital of France?"}]
        second = await sent_with("And of Italy?", ["Rome."])
        assert second["messages"] == [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy?"},
        ]
        # What is cleared from the page is cleared from the history.
        await page.get_by_role("button", name="Clear finished").click()
        await expect(ui.turns).to_have_count(0)
        third = await sent_with("Hello?", ["Hi."])
        assert third["messages"] == [{"role": "user", "content": "Hello?"}]


@TRANSPORTS
async def test_a_reload_mid_turn_resumes_without_loss_or_duplication(
    browser: Browser, transport: str
) -> None:
    tokens = [f"w{i} " for i in range(40)]
    async with open_ui(browser) as ui:
        turn = await ui.ask(
            "Count for me.", transport=transport, script={"tokens": tokens, "delay_ms": 40}
        )
        await expect(answer_of(turn)).to_contain_text("w3 ")
        await ui.page.reload()
        turn = ui.turns.first
        await expect(ui.turns).to_have_count(1)
        await expect(turn.locator(".question")).to_have_text("Count for me.")
        # Still running after the reload (the stream did not end with the page).
        await expect(turn.locator(".cursor")).to_be_visible()
        await ui.finished(turn)
        assert await answer_of(turn).text_content() == "".join(tokens)
        await expect(turn).to_have_attribute("data-reason", "stop")
        assert ui.live.provider.aborted == 0
        # A finished turn survives a reload too, from sessionStorage.
        await ui.page.reload()
        await expect(ui.turns).to_have_count(1)
        await expect(answer_of(ui.turns.first)).to_have_text("".join(tokens))
        await expect(ui.turns.first.locator(".badge")).to_have_text("Completed")


@TRANSPORTS
async def test_a_network_drop_mid_turn_is_resumed(browser: Browser, transport: str) -> None:
    tokens = [f"d{i} " for i in range(30)]
    async with open_ui(browser) as ui:
        turn = await ui.ask("Go.", transport=transport, script={"tokens": tokens, "delay_ms": 40})
        await expect(answer_of(turn)).to_contain_text("d2 ")
        await ui.page.context.set_offline(True)
        await expect(turn).to_have_attribute("data-state", "reconnecting")
        await ui.page.context.set_offline(False)
        await ui.finished(turn)
        assert await answer_of(turn).text_content() == "".join(tokens)
        await expect(turn).to_have_attribute("data-reason", "stop")


async def test_the_sse_decoder_accepts_any_split(browser: Browser) -> None:
    stream = (
        ": keep-alive\r\n\r\n"
        'id: 1\r\nevent: start\r\ndata: {"a":1}\r\n\r\n'
        "id: 2\nevent: text.delta\ndata: line one\ndata:line two\n\n"
        'id: 3\revent: done\rdata: {"t":"\\n\\ndata: x"}\r\r'
    )
    expected = [
        {"event": "start", "data": '{"a":1}', "id": "1"},
        {"event": "text.delta", "data": "line one\nline two", "id": "2"},
        {"event": "done", "data": '{"t":"\\n\\ndata: x"}', "id": "3"},
    ]
    async with open_ui(browser) as ui:
        results = await ui.page.evaluate(
            """async (stream) => {
                const { SSEDecoder } = await import("/ui/sse.js");
                const all = [];
                for (let cut = 0; cut <= stream.length; cut++) {
                    for (let cut2 = cut; cut2 <= stream.length; cut2 += 7) {
                        const d = new SSEDecoder();
                        all.push([...d.feed(stream.slice(0, cut)),
                                  ...d.feed(stream.slice(cut, cut2)),
                                  ...d.feed(stream.slice(cut2))]);
                    }
                }
                return all;
            }""",
            stream,
        )
    wrong = [m for m in results if m != expected]
    assert results and not wrong, wrong[:2]


# -- the structured channel, sources, errors ---------------------------------------------------


async def test_the_insights_panel_fills_from_the_structured_channel(browser: Browser) -> None:
    extraction = {
        "tokens": [
            '{"sentiment": "positive", ',
            '"topics": ["email", "tone"], ',
            '"summary": "Three tips for clear emails."}',
        ],
        "delay_ms": 40,
    }
    async with open_ui(browser, settings(extraction={"timeout_s": 120})) as ui:
        await ui.page.evaluate(
            """() => {
                window.insightStates = [];
                new MutationObserver((records) => {
                    for (const r of records) if (r.target.matches?.(".insights"))
                        window.insightStates.push(r.target.dataset.state);
                }).observe(document.getElementById("turns"),
                           {attributes: true, attributeFilter: ["data-state"], subtree: true});
            }"""
        )
        turn = await ui.ask(
            "Give me tips for clear emails.",
            insights="summary",
            script={"tokens": ["Be brief."], "extraction": extraction},
        )
        panel = turn.get_by_role("region", name="Insights")
        await ui.finished(turn)
        await expect(panel).to_have_attribute("data-state", "done")
        await expect(panel.locator(".insights-state")).to_have_text("validated")
        await expect(panel.locator("dd").nth(0)).to_have_text("positive")
        await expect(panel.locator(".chip")).to_have_text(["email", "tone"])
        await expect(panel.locator("dd").nth(2)).to_have_text("Three tips for clear emails.")
        states = await ui.page.evaluate("window.insightStates")
        assert "partial" in states and states.index("partial") < states.index("done")
        assert await answer_of(turn).text_content() == "Be brief."


async def test_source_cards_render_as_text_and_safe_links(browser: Browser) -> None:
    sources = [
        {"url": "https://example.org/a", "title": "<i>Doc</i> A", "snippet": "S"},
        {"url": "javascript:alert(1)", "title": "Evil"},
        {"url": "https://example.com/b"},
    ]
    async with open_ui(browser) as ui:
        turn = await ui.ask("Cite.", script={"tokens": ["See the docs."], "sources": sources})
        await ui.finished(turn)
        cards = turn.get_by_role("region", name="Sources").locator(".source")
        await expect(cards).to_have_count(3)
        first = cards.nth(0).get_by_role("link")
        await expect(first).to_have_text("<i>Doc</i> A")
        await expect(first).to_have_attribute("href", "https://example.org/a")
        await expect(cards.nth(0)).to_contain_text("S")
        await expect(cards.nth(1).get_by_role("link")).to_have_count(0)
        await expect(cards.nth(1)).to_contain_text("Evil")
        await expect(cards.nth(2).get_by_role("link")).to_have_text("example.com")


async def test_tool_calls_show_with_their_results(browser: Browser) -> None:
    config = settings(routes={"default": {"providers": ["s"], "tools": ["calculator"]}})
    script = {
        "tokens": [],
        "tool_calls": [
            {"name": "calculator", "arguments": ['{"expression": "6*7"}'], "call_id": "ok1"},
            {"name": "calculator", "arguments": ['{"expression": "x"}'], "call_id": "bad1"},
        ],
        "then": [{"tokens": ["It is 42."]}],
    }
    async with open_ui(browser, config) as ui:
        turn = await ui.finished(await ui.ask("6 times 7?", script=script))
        await expect(answer_of(turn)).to_have_text("It is 42.")
        tools = turn.get_by_role("list", name="Tool calls").locator(".tool")
        await expect(tools).to_have_count(2)
        await expect(tools.nth(0)).to_have_attribute("data-ok", "true")
        await expect(tools.nth(0)).to_contain_text('calculator({"expression": "6*7"}) → 42')
        await expect(tools.nth(1)).to_have_attribute("data-ok", "false")
        await expect(tools.nth(1)).to_contain_text("failed: error: ValueError")


async def test_a_failed_turn_and_a_timed_out_turn_get_their_badges(browser: Browser) -> None:
    config = settings(deadlines={"idle_s": 0.3})
    async with open_ui(browser, config) as ui:
        failed = await ui.ask(
            "x", script={"tokens": ["a"], "fault": {"kind": "fail", "at": 0, "retryable": False}}
        )
        await ui.finished(failed)
        await expect(failed).to_have_attribute("data-kind", "failed")
        await expect(failed.locator(".badge")).to_have_text("Failed")
        await expect(failed.get_by_role("alert")).to_contain_text("the upstream provider failed")
        timed_out = await ui.ask("y", script=hanging(["part"]))
        await ui.finished(timed_out)
        await expect(timed_out).to_have_attribute("data-kind", "timeout")
        await expect(timed_out.locator(".badge")).to_have_text("Timed out · upstream idle")
        assert await answer_of(timed_out).text_content() == "part"


@TRANSPORTS
async def test_with_auth_on_the_api_key_opens_resumes_and_stops_turns(
    browser: Browser, transport: str
) -> None:
    key = generate_key()
    config = settings(auth={"keys": [{"tenant": "acme", "hash": hash_key(key)}]})
    async with open_ui(browser, config) as ui:
        await ui.page.get_by_label("API key").fill(key)
        turn = await ui.ask("Secret?", transport=transport, script=hanging(["only ", "for acme"]))
        await expect(answer_of(turn)).to_have_text("only for acme")
        # The key lives in sessionStorage: a reload keeps it, and resumes the turn with it.
        await ui.page.reload()
        await expect(ui.page.get_by_label("API key")).to_have_value(key)
        turn = ui.turns.first
        await expect(answer_of(turn)).to_have_text("only for acme")
        await turn.get_by_role("button", name="Stop").click()
        await ui.finished(turn)
        await expect(turn).to_have_attribute("data-reason", "cancelled")


# -- keyboard ----------------------------------------------------------------------------------


async def test_keyboard_only_send_and_stop(browser: Browser) -> None:
    async with open_ui(browser) as ui:
        page = ui.page
        await page.keyboard.press("Tab")
        await expect(page.locator(".skip-link")).to_be_focused()
        # Settings: open the options and enter the script, keys only.
        await tab_to(page, page.locator("#options summary"))
        await page.keyboard.press("Enter")
        await tab_to(page, page.locator("#extra"))
        await page.keyboard.type(json.dumps({"script": hanging(["typed ", "by keys"])}))
        await tab_to(page, page.locator("#message"))
        await page.keyboard.type("Hello there")
        await page.keyboard.press("Enter")
        turn = ui.turns.first
        await expect(answer_of(turn)).to_have_text("typed by keys")
        await expect(page.locator("#message")).to_be_focused()
        stop = turn.get_by_role("button", name="Stop")
        await tab_to(page, stop, backwards=True)
        await page.keyboard.press("Enter")
        await ui.finished(turn)
        await expect(turn).to_have_attribute("data-reason", "cancelled")
        # Focus stays in the turn instead of falling back to the page.
        assert await turn.evaluate("(el) => el.contains(document.activeElement)")
        # Esc in the message box stops the newest turn still running.
        await tab_to(page, page.locator("#message"))
        await page.keyboard.type("And again")
        await page.keyboard.press("Enter")
        second = ui.turns.nth(1)
        await expect(answer_of(second)).to_have_text("typed by keys")
        await page.keyboard.press("Escape")
        await ui.finished(second)
        await expect(second).to_have_attribute("data-reason", "cancelled")


async def test_the_skip_link_leads_to_the_message_box(browser: Browser) -> None:
    async with open_ui(browser) as ui:
        await ui.page.keyboard.press("Tab")
        await expect(ui.page.locator(".skip-link")).to_be_focused()
        await ui.page.keyboard.press("Enter")
        await expect(ui.page.locator("#message")).to_be_focused()


async def tab_to(page: Page, target: Locator, *, backwards: bool = False) -> None:
    """Press Tab (Shift+Tab) until ``target`` has the focus; fails if it is not reachable."""
    for _ in range(30):
        if await target.evaluate("(el) => el === document.activeElement"):
            return
        await page.keyboard.press("Shift+Tab" if backwards else "Tab")
    await expect(target).to_be_focused()


# -- screenshot --------------------------------------------------------------------------------


async def test_screenshot_of_finished_and_running_turns(browser: Browser, tmp_path: Path) -> None:
    answer = [
        "Here are three tips for clearer emails:\n\n",
        "1. Put the request in the first line, ",
        "so the reader knows what you need before the details.\n",
        "2. Keep one topic per email; ",
        "start a new thread for anything else.\n",
        "3. End with the next step and a date, ",
        "for example: “Could you confirm by Friday?”",
    ]
    extraction = {
        "tokens": [
            '{"sentiment": "positive", "topics": ["email", "writing", "clarity"], ',
            '"summary": "Lead with the request, one topic per email, end with a next step."}',
        ]
    }
    async with open_ui(browser, settings(extraction={"timeout_s": 120})) as ui:
        await ui.page.set_viewport_size({"width": 1180, "height": 1180})
        first = await ui.ask(
            "Give me three tips for writing clearer emails.",
            insights="summary",
            script={
                "tokens": answer,
                "delay_ms": 20,
                "extraction": extraction,
                "sources": [
                    {
                        "url": "https://handbook.example.com/writing/email",
                        "title": "Writing handbook: email",
                        "snippet": "Lead with the ask; one topic per message.",
                    }
                ],
            },
        )
        await ui.finished(first)
        await expect(first.locator(".insights")).to_have_attribute("data-state", "done")
        second = await ui.ask(
            "And a subject line for a meeting request?",
            insights="off",
            script=hanging(["“Meeting request: ", "project kickoff, "]),
        )
        await expect(answer_of(second)).to_have_text("“Meeting request: project kickoff, ")
        await second.get_by_role("button", name="Stop").click()
        await ui.finished(second)
        third = await ui.ask(
            "Now draft the email for Thursday.",
            script=hanging(["Hi team,\n\n", "Could we meet on Thursday at 10:00 ", "to plan the"]),
        )
        await expect(answer_of(third)).to_contain_text("to plan the")
        await ui.page.locator("#message").blur()
        target = Path(os.environ.get("TOKENWIRE_SCREENSHOT") or tmp_path / "ui.png")
        # Animations off: the cursor is caught visible, the live dot lit, every time.
        png = await ui.page.screenshot(path=str(target), animations="disabled")
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
        await third.get_by_role("button", name="Stop").click()
        await ui.finished(third)


# -- static files --------------------------------------------------------------------------------


async def test_the_page_and_its_files_are_served_with_their_types() -> None:
    async with live_server(settings()) as live:
        page = await live.client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-cache"
        assert '<script type="module" src="ui/app.js">' in page.text
        for name, kind in [
            ("app.js", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("icon.svg", "image/svg+xml"),
        ]:
            response = await live.client.get(f"/ui/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"] == kind
            assert response.headers["x-content-type-options"] == "nosniff"
            again = await live.client.get(
                f"/ui/{name}", headers={"If-None-Match": response.headers["etag"]}
            )
            assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../ui.py",
        "/ui/..%2Fui.py",
        "/ui/%2e%2e/app.py",
        "/ui/.hidden.js",
        "/ui/nope.js",
        "/ui/app.py",
        "/ui/static",
        "/ui/",
        "/ui/..",
    ],
)
async def test_nothing_outside_the_static_files_is_served(path: str) -> None:
    async with live_server(settings()) as live:
        status, body = await raw_get(live.url, path)
    assert status == 404, body
    assert json.loads(body)["error"]["code"] == "not_found"


async def raw_get(base: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (an HTTP client would normalize the dot segments)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
