from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tokenwire import Engine, Settings
from tokenwire.providers import ScriptedProvider


def scripted_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "providers": {"a": {"kind": "scripted"}, "b": {"kind": "scripted", "model": "backup"}},
        "routes": {"default": {"providers": ["a"]}, "chain": {"providers": ["a", "b"]}},
        "retry": {"attempts_per_provider": 2, "backoff_initial_s": 0.001, "backoff_max_s": 0.002},
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine(scripted_settings()) as eng:
        yield eng


def scripted(engine: Engine, name: str = "a") -> ScriptedProvider:
    provider = engine.providers[name]
    assert isinstance(provider, ScriptedProvider)
    return provider
