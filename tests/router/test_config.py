"""Built-in routes from TOML settings, end to end: a real Done record, receiver and file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from tests.router.records import make_record
from tests.support.receiver import WebhookReceiver
from tokenwire.router import (
    FieldEquals,
    JsonlSink,
    JsonlSinkSettings,
    Router,
    RouterSettings,
    WebhookSink,
    WebhookSinkSettings,
)

CONFIG = """
[router.routes.negative_feedback]
when = { field = "structured.data.sentiment", equals = "negative" }
timeout_s = 10
[router.routes.negative_feedback.sink]
kind = "webhook"
url = "{url}"
secret_env = "HOOK_SECRET"
max_attempts = 5
backoff_initial_s = 0

[router.routes.audit]
sink = { kind = "jsonl", path = "{path}" }

[router.routes.off]
enabled = false
sink = { kind = "jsonl", path = "/nonexistent/off.jsonl" }
"""


def load(url: str = "http://127.0.0.1:9/hook", path: str = "/tmp/turns.jsonl") -> RouterSettings:
    text = CONFIG.replace("{url}", url).replace("{path}", path)
    return RouterSettings.model_validate(tomllib.loads(text)["router"])


def test_settings_parse() -> None:
    settings = load()
    hook = settings.routes["negative_feedback"]
    assert isinstance(hook.sink, WebhookSinkSettings)
    assert hook.sink.max_attempts == 5
    assert hook.timeout_s == 10
    assert hook.when == FieldEquals(field="structured.data.sentiment", equals="negative")
    audit = settings.routes["audit"]
    assert audit.when is None
    assert isinstance(audit.sink, JsonlSinkSettings)
    assert RouterSettings().routes == {}


@pytest.mark.parametrize(
    "data",
    [
        {"routes": {"r": {"sink": {"kind": "smtp"}}}},
        {"routes": {"r": {"sink": {"kind": "webhook", "url": "ftp://x"}}}},
        {"routes": {"r": {"sink": {"kind": "jsonl", "path": "x", "mode": "a"}}}},
        {"routes": {"r": {"sink": {"kind": "jsonl", "path": "x"}, "timeout_s": 0}}},
        {"routes": {"r": {"sink": {"kind": "jsonl", "path": "x"}, "when": {"field": "a"}}}},
        {"routes": {"bad name": {"sink": {"kind": "jsonl", "path": "x"}}}},
        {"routes": {}, "extra": 1},
    ],
)
def test_invalid_settings_are_rejected(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RouterSettings.model_validate(data)


async def test_a_missing_secret_env_is_a_startup_error() -> None:
    with pytest.raises(ValueError, match="HOOK_SECRET"):
        Router.from_settings(load(), environ={})


async def test_from_settings_routes_real_turns(tmp_path: Path) -> None:
    audit = tmp_path / "turns.jsonl"
    async with WebhookReceiver(secret=b"hook-secret") as receiver:
        settings = load(url=receiver.url, path=str(audit))
        async with Router.from_settings(settings, environ={"HOOK_SECRET": "hook-secret"}) as router:
            assert [r.name for r in router.routes] == ["negative_feedback", "audit"]
            assert isinstance(router.routes[0].target, WebhookSink)
            assert isinstance(router.routes[1].target, JsonlSink)
            assert router.routes[0].timeout_s == 10
            assert router.routes[1].timeout_s == settings.default_timeout_s
            receiver.fail_first(2)
            negative = await router.dispatch(make_record("s1", "negative"))
            positive = await router.dispatch(make_record("s2", "positive"))

    assert [(r.route, r.ok, r.attempts) for r in negative] == [
        ("negative_feedback", True, 3),
        ("audit", True, 1),
    ]
    assert [(r.route, r.ok) for r in positive] == [("audit", True)]
    assert list(receiver.accepted) == ["s1:negative_feedback"]
    delivered = orjson.loads(receiver.accepted["s1:negative_feedback"][0].body)
    assert delivered == make_record("s1", "negative")
    assert all(r.signature_valid for r in receiver.requests)
    lines = [orjson.loads(line) for line in audit.read_bytes().splitlines()]
    assert [line["idempotency_key"] for line in lines] == ["s1:audit", "s2:audit"]
    assert lines[1]["record"]["metadata"] == {"tenant": "acme"}
