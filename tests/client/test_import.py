"""``import tokenwire.client`` needs none of the server's dependencies: proved in a fresh
interpreter where importing them fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCKED = (
    "fastapi",
    "starlette",
    "uvicorn",
    "llama_cpp",
    "sqlalchemy",
    "alembic",
    "anthropic",
    "aiohttp",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "websockets",
)

PROGRAM = textwrap.dedent(
    """
    import sys

    BLOCKED = {blocked!r}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Refuse())

    import tokenwire.client
    from tokenwire.client import AsyncTokenwire, Tokenwire, TokenwireError
    from tokenwire import Done, TextDelta, __version__

    Tokenwire("http://127.0.0.1:1").close()
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
    assert not loaded, loaded
    try:
        import tokenwire.engine
    except ImportError:
        print("ok")
    """
)


def test_the_client_imports_without_the_server_dependencies() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(blocked=BLOCKED)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"  # and the blocking did work


def test_the_top_level_package_still_offers_everything_lazily() -> None:
    import tokenwire

    for name in tokenwire.__all__:
        assert getattr(tokenwire, name) is not None
    assert set(tokenwire.__all__) <= set(dir(tokenwire))
    with pytest.raises(AttributeError, match="not_a_member"):
        tokenwire.not_a_member  # type: ignore[attr-defined]  # noqa: B018


def test_the_client_api_is_pinned() -> None:
    import tokenwire.client

    assert tokenwire.client.__all__ == [
        "DEFAULT_TIMEOUT",
        "APIConnectionError",
        "APIError",
        "APIStatusError",
        "APITimeoutError",
        "AsyncEventStream",
        "AsyncTokenwire",
        "AsyncWebSocketSession",
        "EventStream",
        "ResumeError",
        "ResumePolicy",
        "ServerProtocolError",
        "StreamCursor",
        "Tokenwire",
        "TokenwireError",
        "TurnError",
        "TurnParams",
        "WebSocketTurn",
    ]
    for name in tokenwire.client.__all__:
        assert hasattr(tokenwire.client, name), name
