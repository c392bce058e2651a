"""pytest fixtures for applications built on tokenwire. In your ``conftest.py``::

    pytest_plugins = ["tokenwire.testing.fixtures"]

They need pytest-asyncio. Every fixture is function-scoped and private to its test:

- ``tokenwire_settings``: the scripted provider behind route ``default`` (deterministic
  streams; a request's ``script`` sets tokens, delays and faults) and a SQLite store in the
  test's temporary directory. Override it in your conftest to test your own configuration.
- ``tokenwire_engine``: an open :class:`~tokenwire.Engine` on those settings.
- ``tokenwire_recorder``: a :class:`~tokenwire.testing.ChannelRecorder` on that engine.
- ``tokenwire_app``: the standalone ASGI app on that engine.
- ``tokenwire_server``: that app on a real uvicorn server on a free loopback port (its URL).
- ``tokenwire_http``: an ``httpx.AsyncClient`` with that URL as its base URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from ..config import Settings
from ..engine import Engine
from ..server import create_app
from ..server.app import TokenwireApp
from .recorder import ChannelRecorder
from .server import serve_app


@pytest.fixture
def tokenwire_settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "providers": {"scripted": {"kind": "scripted"}},
            "routes": {"default": {"providers": ["scripted"]}},
            "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'tokenwire.db'}"},
        }
    )


@pytest_asyncio.fixture
async def tokenwire_engine(tokenwire_settings: Settings) -> AsyncIterator[Engine]:
    async with Engine(tokenwire_settings) as engine:
        yield engine


@pytest_asyncio.fixture
async def tokenwire_recorder(tokenwire_engine: Engine) -> AsyncIterator[ChannelRecorder]:
    recorder = ChannelRecorder(tokenwire_engine)
    yield recorder
    recorder.close()


@pytest.fixture
def tokenwire_app(tokenwire_engine: Engine) -> TokenwireApp:
    return create_app(engine=tokenwire_engine)


@pytest_asyncio.fixture
async def tokenwire_server(tokenwire_app: Any) -> AsyncIterator[str]:
    async with serve_app(tokenwire_app) as url:
        yield url


@pytest_asyncio.fixture
async def tokenwire_http(tokenwire_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tokenwire_server, timeout=30) as client:
        yield client
