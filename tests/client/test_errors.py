"""HTTP errors become APIStatusError (status, code, message, retry_after) wherever they
happen: starting a stream, following one, cancel, status; over the sync client too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tokenwire import Done
from tokenwire.client import (
    APIConnectionError,
    APIStatusError,
    AsyncTokenwire,
    ResumePolicy,
    Tokenwire,
    TokenwireError,
)

from ..server.conftest import Live, live_server, settings
from ..server.test_access import KEY_A, auth_settings
from ..support.server import free_port


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    async with live_server(settings()) as server:
        yield server


async def first_event(tw: AsyncTokenwire, **kwargs: Any) -> Any:
    async with tw.stream("x", **kwargs) as stream:
        return await anext(stream)


async def test_without_a_key_every_call_is_a_401(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENWIRE_API_KEY", raising=False)
    async with live_server(auth_settings()) as live, AsyncTokenwire(live.url) as tw:
        calls = [
            first_event(tw),
            tw.complete("x"),
            tw.status("tw_x"),
            tw.cancel("tw_x"),
            anext(aiter(tw.events("tw_x"))),
        ]
        for call in calls:
            with pytest.raises(APIStatusError) as info:
                await call
            assert (info.value.status, info.value.code) == (401, "unauthorized")
            assert info.value.message
            assert info.value.headers["www-authenticate"].startswith("Bearer")
        async with AsyncTokenwire(live.url, api_key="tw_wrong") as wrong:
            with pytest.raises(APIStatusError, match="401 unauthorized"):
                await wrong.complete("x")


async def test_the_key_comes_from_the_parameter_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with live_server(auth_settings()) as live:
        async with AsyncTokenwire(live.url, api_key=KEY_A) as tw:
            assert isinstance(await tw.complete("x"), Done)
        monkeypatch.setenv("TOKENWIRE_API_KEY", KEY_A)
        async with AsyncTokenwire(live.url) as tw:
            done = await tw.complete("x")
            assert (await tw.status(done.stream_id))["state"] == "completed"
        monkeypatch.setenv("TOKENWIRE_BASE_URL", live.url)
        async with AsyncTokenwire() as tw:
            assert tw.base_url == live.url
            assert isinstance(await tw.complete("x"), Done)


async def test_an_unknown_stream_is_a_404(live: Live) -> None:
    async with AsyncTokenwire(live.url) as tw:
        for call in (tw.status("tw_nope"), tw.cancel("tw_nope")):
            with pytest.raises(APIStatusError) as info:
                await call
            assert (info.value.status, info.value.code) == (404, "unknown_stream")
        # Following a stream that is not held is refused at once: there is nothing to resume.
        with pytest.raises(APIStatusError) as info:
            async for _ in tw.events("tw_nope"):
                pass
        assert info.value.status == 404


async def test_a_request_the_server_rejects_is_a_422(live: Live) -> None:
    async with AsyncTokenwire(live.url) as tw:
        with pytest.raises(APIStatusError) as info:
            await tw.complete("x", route="nowhere")
        assert (info.value.status, info.value.code) == (422, "unknown_route")
        with pytest.raises(APIStatusError) as info:
            await tw.complete("x", extra_body={"bogus": 1})
        assert (info.value.status, info.value.code) == (422, "invalid_request")
        assert "bogus" in info.value.message
    assert live.provider.started == 0


async def test_overloaded_is_a_503_with_retry_after() -> None:
    hang = {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}}
    async with live_server(settings(limits={"max_active_turns": 1})) as live:
        async with AsyncTokenwire(live.url) as tw:
            async with tw.stream("x", background=True, script=hang) as busy:
                first = await anext(busy)
            with pytest.raises(APIStatusError) as info:
                await tw.complete("x")
            assert (info.value.status, info.value.code) == (503, "overloaded")
            assert info.value.retry_after is not None and info.value.retry_after >= 1
            await tw.cancel(first.stream_id)


async def test_the_sync_client_raises_the_same_errors(live: Live) -> None:
    def calls() -> list[TokenwireError]:
        errors: list[TokenwireError] = []
        with Tokenwire(live.url) as tw:
            for call in (
                lambda: tw.complete("x", route="nowhere"),
                lambda: tw.status("tw_nope"),
                lambda: list(tw.events("tw_nope")),
            ):
                try:
                    call()
                except TokenwireError as exc:
                    errors.append(exc)
        return errors

    errors = await asyncio.to_thread(calls)
    assert [(e.status, e.code) for e in errors if isinstance(e, APIStatusError)] == [
        (422, "unknown_route"),
        (404, "unknown_stream"),
        (404, "unknown_stream"),
    ]


async def test_a_server_that_cannot_be_reached_is_a_connection_error() -> None:
    policy = ResumePolicy(max_attempts=1, backoff_initial_s=0, backoff_max_s=0)
    async with AsyncTokenwire(f"http://127.0.0.1:{free_port()}", resume=policy) as tw:
        with pytest.raises(APIConnectionError) as info:
            await tw.complete("x")
        with pytest.raises(APIConnectionError):
            await tw.status("tw_x")
    assert info.value.__cause__ is not None


def test_an_error_body_that_is_not_json_still_gives_status_code_and_text() -> None:
    error = APIStatusError.from_response(
        502, {"Content-Type": "text/html", "Retry-After": "7"}, b"<h1>Bad gateway</h1>"
    )
    assert (error.status, error.code, error.message) == (502, "http_502", "<h1>Bad gateway</h1>")
    assert error.retry_after == 7
    json = APIStatusError.from_response(
        413, {}, b'{"error": {"code": "body_too_large", "message": "too big"}}'
    )
    assert str(json) == "413 body_too_large: too big" and json.retry_after is None
