from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tokenwire import Engine, Settings, create_app
from tokenwire.protocol import Event, SSEDecoder, decode_event
from tokenwire.providers import ScriptedProvider

from ..support.server import serve


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "providers": {"s": {"kind": "scripted"}},
        "routes": {"default": {"providers": ["s"]}},
        "retry": {"attempts_per_provider": 1},
    }
    base.update(overrides)
    return Settings(**base)


@dataclass
class Live:
    url: str
    engine: Engine
    client: httpx.AsyncClient

    @property
    def provider(self) -> ScriptedProvider:
        provider = self.engine.providers["s"]
        assert isinstance(provider, ScriptedProvider)
        return provider


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    async with live_server(settings()) as server:
        yield server


def live_server(config: Settings) -> Any:
    import contextlib

    @contextlib.asynccontextmanager
    async def run() -> AsyncIterator[Live]:
        engine = Engine(config)
        async with serve(
            create_app(engine=engine), ws_max_size=config.limits.max_ws_frame_bytes
        ) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                yield Live(url, engine, client)

    return run()


async def read_sse(response: httpx.Response) -> list[Event]:
    decoder = SSEDecoder()
    events: list[Event] = []
    async for chunk in response.aiter_bytes():
        events += [decode_event(m.data) for m in decoder.feed(chunk)]
    return events
