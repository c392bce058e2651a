"""Routing rules pick a turn's route and model tier; the fallback tier answers when the chosen
one fails before the first token; `start` and `done` say which route and tier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from tokenwire import Done, Engine, Event, RequestError, Settings
from tokenwire.protocol import Start

from .conftest import scripted_settings
from .test_turn import check_invariants


def routed_settings(**overrides: Any) -> Settings:
    return scripted_settings(
        routes={
            "default": {"providers": ["a"]},
            "support": {
                "tiers": {"fast": ["a"], "smart": ["b"]},
                "fallback": ["smart"],
                "system_prompt": "You are the support desk.",
            },
            "billing": {"providers": ["b"]},
        },
        routing={
            "rules": [
                {
                    "name": "vip",
                    "when": {"field": "metadata.plan", "equals": "enterprise"},
                    "route": "support",
                    "tier": "smart",
                },
                {
                    "name": "money",
                    "when": {"field": "text", "keywords": ["refund", "invoice"]},
                    "route": "billing",
                },
                {
                    "when": {
                        "all": [
                            {"field": "conversation_id", "exists": True},
                            {"field": "text", "min_chars": 200},
                        ]
                    },
                    "route": "support",
                },
            ]
        },
        **overrides,
    )


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(routed_settings(store={"url": ""})) as eng:
        yield eng


async def run(engine: Engine, body: dict[str, Any]) -> tuple[Start, Done, list[Event]]:
    handle = await engine.submit(body)
    events = [event async for event in handle.events()]
    done = check_invariants(events)
    assert isinstance(done, Done)
    start = events[0]
    assert isinstance(start, Start)
    return start, done, events


@pytest.mark.parametrize(
    ("body", "route", "tier"),
    [
        ({"prompt": "hello", "metadata": {"plan": "enterprise"}}, "support", "smart"),
        ({"prompt": "I want a REFUND, now."}, "billing", "default"),
        ({"prompt": "where is my invoice?"}, "billing", "default"),
        ({"prompt": "refunded yesterday"}, "default", "default"),  # whole words only
        ({"prompt": "hello", "metadata": {"plan": "free"}}, "default", "default"),
        # The request's own route (and tier) win over every rule.
        ({"prompt": "refund", "route": "support"}, "support", "fast"),
        ({"prompt": "refund", "route": "support", "tier": "smart"}, "support", "smart"),
        ({"prompt": "hi", "metadata": {"plan": "enterprise"}, "tier": "fast"}, "support", "fast"),
    ],
)
async def test_rules_choose_the_route_and_tier(
    engine: Engine, body: dict[str, Any], route: str, tier: str
) -> None:
    start, done, _ = await run(engine, body)
    assert (start.route, start.tier) == (route, tier)
    assert (done.route, done.tier) == (route, tier)
    expected_model = (
        "backup" if (route, tier) in (("support", "smart"), ("billing", "default")) else "scripted"
    )
    assert done.model == expected_model


async def test_a_rule_on_the_conversation_sees_its_id(tmp_path: Any) -> None:
    settings = routed_settings(store={"url": f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"})
    async with Engine(settings) as engine:
        assert engine.store is not None
        conversation = (await engine.store.create_conversation())["id"]
        body = {"prompt": "y" * 250, "conversation_id": conversation}
        start, done, _ = await run(engine, body)
        assert (start.route, done.route, done.tier) == ("support", "support", "fast")
        start, done, _ = await run(engine, {"prompt": "y" * 250})
        assert start.route == "default"


async def test_the_fallback_tier_takes_over_before_the_first_token(engine: Engine) -> None:
    # Both attempts on the fast tier fail before any text; the smart tier answers.
    script = {"tokens": ["fine"], "fault": {"kind": "fail", "at": 0, "times": 2}}
    start, done, events = await run(engine, {"prompt": "hi", "route": "support", "script": script})
    assert (start.tier, done.tier) == ("fast", "smart")
    assert done.model == "backup" and done.attempts == 3 and done.answer == "fine"
    assert not any(e.type == "error" for e in events)


async def test_the_route_prompt_is_sent(engine: Engine) -> None:
    await run(engine, {"prompt": "hello", "route": "support"})
    sent = engine.providers["a"].requests[-1]  # type: ignore[attr-defined]
    assert sent.messages[0].role == "system"
    assert sent.messages[0].content == "You are the support desk."


async def test_an_unknown_tier_is_a_client_error(engine: Engine) -> None:
    with pytest.raises(RequestError) as info:
        await engine.submit({"prompt": "hi", "route": "support", "tier": "huge"})
    assert info.value.code == "unknown_tier" and info.value.status == 422
    with pytest.raises(RequestError) as info:
        await engine.submit({"prompt": "hi", "route": "nowhere"})
    assert info.value.code == "unknown_route"


async def test_route_choices_are_counted(engine: Engine) -> None:
    await run(engine, {"prompt": "refund please"})
    await run(engine, {"prompt": "hi"})
    text = engine.metrics.render().decode()
    assert 'tokenwire_route_choices_total{route="billing",rule="money",tier="default"} 1.0' in text
    assert (
        'tokenwire_route_choices_total{route="default",rule="default",tier="default"} 1.0' in text
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"routing": {"rules": [{"when": {"always": True}, "route": "nope"}]}}, "route 'nope'"),
        (
            {"routing": {"rules": [{"when": {"always": True}, "route": "default", "tier": "x"}]}},
            "tier 'x'",
        ),
        ({"routes": {"default": {"tiers": {"fast": ["a"]}, "fallback": ["slow"]}}}, "'slow'"),
        ({"routes": {"default": {"providers": ["a"], "tiers": {"f": ["a"]}}}}, "exactly one"),
        ({"routes": {"default": {}}}, "exactly one"),
        (
            {
                "routing": {
                    "rules": [{"when": {"field": "text", "keywords": []}, "route": "default"}]
                }
            },
            "keywords",
        ),
    ],
)
def test_bad_routing_config_is_refused_with_a_clear_message(
    change: dict[str, Any], message: str
) -> None:
    base: dict[str, Any] = {
        "providers": {"a": {"kind": "scripted"}},
        "routes": {"default": {"providers": ["a"]}},
    }
    base.update(change)
    with pytest.raises(ValidationError, match=message):
        Settings(**base)


async def test_a_route_extraction_applies_to_turns_that_ask_for_none() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    settings = scripted_settings(
        routes={"default": {"providers": ["a"], "extraction": {"schema": schema}}},
        store={"url": ""},
    )
    async with Engine(settings) as engine:
        script = {"tokens": ["Fine."], "extraction": {"tokens": ['{"ok": true}']}}
        _, done, _ = await run(engine, {"prompt": "ok?", "script": script})
        assert done.structured is not None and done.structured["data"] == {"ok": True}
        # Every stage the turn had is counted in the stage histogram.
        metrics = engine.metrics.render().decode()
        for stage in ("precheck", "route", "first_token", "extract", "post_process", "total"):
            assert f'tokenwire_stage_seconds_count{{stage="{stage}"}} 1.0' in metrics, stage
