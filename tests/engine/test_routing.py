"""The system channel after `done`: the engine hands each turn's record to the router; a
failing or hanging route never touches the human channel."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tokenwire import Done, Engine

from ..support.receiver import WebhookReceiver
from .conftest import scripted_settings
from .test_turn import check_invariants

MOOD = {"type": "object", "properties": {"mood": {"type": "string"}}, "required": ["mood"]}


async def test_routes_get_the_record_after_done_and_failures_stay_in_their_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    async with WebhookReceiver(secret=b"s3cret") as receiver:
        receiver.fail_first(2)
        settings = scripted_settings(
            router={
                "routes": {
                    "negative": {
                        "when": {"field": "structured.data.mood", "equals": "bad"},
                        "sink": {
                            "kind": "webhook",
                            "url": receiver.url,
                            "secret_env": "HOOK_SECRET",
                            "max_attempts": 5,
                            "backoff_initial_s": 0.01,
                        },
                    },
                }
            }
        )
        async with Engine(settings) as engine:
            seen: list[dict[str, Any]] = []
            release = asyncio.Event()

            async def record(rec: dict[str, Any]) -> None:
                seen.append(rec)

            def explode(rec: dict[str, Any]) -> None:
                raise RuntimeError("consumer bug")

            async def hang(rec: dict[str, Any]) -> None:
                await release.wait()

            engine.router.route("record", None, record)
            engine.router.route("explode", None, explode)
            engine.router.route("hang", None, hang, timeout_s=0.2)
            body = {
                "prompt": "x",
                "metadata": {"tenant": "t1"},
                "script": {"tokens": ["Oh", " no"], "extraction": {"tokens": ['{"mood": "bad"}']}},
                "extraction": {"schema": MOOD, "strategy": "sequential"},
            }
            handle = await engine.submit(body)
            events = [e async for e in handle.events()]
            # The stream is complete while the routes may still be running.
            done = check_invariants(events)
            assert isinstance(done, Done) and done.answer == "Oh no"
            async with asyncio.timeout(30):
                await engine.routes_settled()
            results = {r["route"]: r for r in engine.route_results(handle.stream_id) or []}
            release.set()
            status = await engine.status(handle.stream_id)
    assert results["record"]["ok"] and results["negative"]["ok"]
    assert results["negative"]["attempts"] == 3
    assert results["negative"]["idempotency_key"] == f"{handle.stream_id}:negative"
    assert (
        results["explode"]["outcome"] == "error" and "consumer bug" in results["explode"]["error"]
    )
    assert results["hang"]["outcome"] == "timeout"
    assert list(receiver.accepted) == [f"{handle.stream_id}:negative"]
    assert all(r.signature_valid for r in receiver.requests)
    [rec] = seen
    assert rec["stream_id"] == handle.stream_id and rec["metadata"] == {"tenant": "t1"}
    assert rec["structured"]["data"] == {"mood": "bad"}
    assert status["routes"] is not None
