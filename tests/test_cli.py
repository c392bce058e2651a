"""The ``tokenwire`` command, run as its users run it: a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from tokenwire.protocol import SSEDecoder, decode_event

SCRIPTED = """
scripted = true
default_route = "scripted"

[providers.s]
kind = "scripted"

[routes.default]
providers = ["s"]
"""

TOKENWIRE = [sys.executable, "-m", "tokenwire.cli"]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tokenwire.toml"
    path.write_text(SCRIPTED)
    return path


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *TOKENWIRE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture
async def served(config: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    proc = await _spawn("serve", "--config", str(config), "--port", "0")
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        line = (await proc.stdout.readline()).decode()
    assert line.startswith("tokenwire serving on http://127.0.0.1:"), line
    url = line.split()[-1]
    yield proc, url
    if proc.returncode is None:
        proc.terminate()
        await proc.wait()


async def test_serve_prints_its_url_and_streams(
    served: tuple[asyncio.subprocess.Process, str],
) -> None:
    _, url = served
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        async with client.stream("POST", "/v1/streams", json={"prompt": "x"}) as response:
            decoder = SSEDecoder()
            events = [
                decode_event(m.data)
                async for chunk in response.aiter_bytes()
                for m in decoder.feed(chunk)
            ]
    assert events[-1].type == "done"


async def test_sigterm_ends_streams_in_flight_with_shutdown(
    served: tuple[asyncio.subprocess.Process, str],
) -> None:
    proc, url = served
    body = {"prompt": "x", "script": {"tokens": ["a"], "fault": {"kind": "hang", "at": 1}}}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async with client.stream("POST", "/v1/streams", json=body) as response:
            decoder = SSEDecoder()
            events = []
            async for chunk in response.aiter_bytes():
                for message in decoder.feed(chunk):
                    event = decode_event(message.data)
                    events.append(event)
                    if event.type == "text.delta":
                        proc.send_signal(signal.SIGTERM)
    assert events[-1].type == "done"
    assert events[-1].reason.value == "shutdown"  # type: ignore[union-attr]
    async with asyncio.timeout(30):
        # uvicorn re-raises the signal once it has shut down: death by SIGTERM is the clean exit.
        assert await proc.wait() in (0, -signal.SIGTERM)


async def test_chat_streams_and_reports_ttft_and_rate(config: Path) -> None:
    proc = await _spawn("chat", "hello", "--config", str(config))
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0
    assert out.decode().strip() == "Hello from the scripted provider."
    assert "TTFT" in err.decode() and "tokens/s" in err.decode()


async def test_chat_ctrl_c_cancels_the_turn_cleanly(config: Path) -> None:
    script = orjson.dumps({"tokens": ["partial"], "fault": {"kind": "hang", "at": 1}}).decode()
    proc = await _spawn("chat", "hello", "--config", str(config), "--script", script)
    assert proc.stdout is not None and proc.stderr is not None
    async with asyncio.timeout(60):
        assert await proc.stdout.readexactly(len("partial")) == b"partial"
        proc.send_signal(signal.SIGINT)
        _, err = await proc.communicate()
    assert proc.returncode == 0
    assert "cancelled" in err.decode() and "Traceback" not in err.decode()


async def test_chat_through_a_running_server(
    served: tuple[asyncio.subprocess.Process, str], config: Path
) -> None:
    _, url = served
    proc = await _spawn("chat", "hello", "--url", url)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert out.decode().strip() == "Hello from the scripted provider."


async def test_providers_lists_reachability(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        SCRIPTED
        + """
[providers.dead]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "NO_SUCH_KEY"
"""
    )
    proc = await _spawn("providers", "--config", str(path))
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    lines = out.decode().splitlines()
    assert proc.returncode == 1
    assert any(line.startswith("s ") and " yes " in line for line in lines)
    assert any(line.startswith("dead ") and " NO " in line for line in lines)


async def test_a_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[routes.default]\nproviders = ["missing"]\n')
    proc = await _spawn("serve", "--config", str(path))
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "missing" in err.decode() and "Traceback" not in err.decode()


async def test_a_server_with_keys_serves_chat_with_the_key_from_the_environment(
    tmp_path: Path,
) -> None:
    from tokenwire.auth import generate_key, hash_key

    key = generate_key()
    path = tmp_path / "auth.toml"
    path.write_text(SCRIPTED + f'\n[[auth.keys]]\ntenant = "acme"\nhash = "{hash_key(key)}"\n')
    server = await _spawn("serve", "--config", str(path), "--port", "0")
    assert server.stdout is not None
    try:
        async with asyncio.timeout(60):
            url = (await server.stdout.readline()).decode().split()[-1]

        async def chat(env_key: str | None) -> tuple[int | None, str, str]:
            env = {k: v for k, v in os.environ.items() if k != "TOKENWIRE_API_KEY"}
            if env_key is not None:
                env["TOKENWIRE_API_KEY"] = env_key
            proc = await asyncio.create_subprocess_exec(
                *TOKENWIRE,
                "chat",
                "hello",
                "--url",
                url,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            async with asyncio.timeout(60):
                out, err = await proc.communicate()
            return proc.returncode, out.decode(), err.decode()

        code, out, _ = await chat(key)
        assert code == 0 and out.strip() == "Hello from the scripted provider."
        code, _, err = await chat(None)
        assert code == 1 and "HTTP 401" in err and "missing API key" in err
    finally:
        server.terminate()
        await server.wait()


async def test_kb_add_and_search_then_a_retrieving_route_answers_with_sources(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kb.toml"
    path.write_text(
        SCRIPTED
        + f"""
[store]
url = "sqlite+aiosqlite:///{tmp_path / "store.db"}"

[routes.docs]
providers = ["s"]
retrieval = {{ top_k = 2 }}
"""
    )
    corpus = Path(__file__).parent / "fixtures" / "kb"
    add = await _spawn(
        "kb", "add", str(corpus), "--base-url", "https://docs.example.com/", "--config", str(path)
    )
    async with asyncio.timeout(60):
        out, err = await add.communicate()
    assert add.returncode == 0, err.decode()
    assert "lumen-kettle.md: " in out.decode()

    search = await _spawn(
        "kb", "search", "how often do I descale the kettle?", "--json", "--config", str(path)
    )
    async with asyncio.timeout(60):
        out, err = await search.communicate()
    assert search.returncode == 0, err.decode()
    found = orjson.loads(out)
    assert found[0]["url"] == "https://docs.example.com/products/lumen-kettle.md#descaling"

    proc = await _spawn("serve", "--config", str(path), "--port", "0")
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode()
        url = line.split()[-1]
        body = {"prompt": "How often to descale the kettle?", "route": "docs", "script": {}}
        async with (
            httpx.AsyncClient(base_url=url) as client,
            client.stream("POST", "/v1/streams", json=body) as response,
        ):
            decoder = SSEDecoder()
            events = [
                decode_event(m.data)
                async for chunk in response.aiter_bytes()
                for m in decoder.feed(chunk)
            ]
    finally:
        proc.terminate()
        await proc.wait()
    done = events[-1]
    assert done.type == "done"
    assert done.sources[0] == found[0]["url"]  # type: ignore[union-attr]
    assert "retrieval" in done.timings  # type: ignore[union-attr]


async def test_kb_search_with_no_knowledge_base_configured_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENWIRE_STORE__URL", "")  # no store, so no database to hold a kb
    path = tmp_path / "none.toml"
    path.write_text(SCRIPTED)
    proc = await _spawn("kb", "search", "anything", "--config", str(path))
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "no knowledge base" in err.decode() and "Traceback" not in err.decode()


async def test_serve_accepts_a_plain_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "tokenwire.toml"
    path.write_text(SCRIPTED + f'\n[store]\nurl = "sqlite:///{tmp_path}/plain.db"\n')
    env = {k: v for k, v in os.environ.items() if k != "TOKENWIRE_STORE__URL"}
    proc = await asyncio.create_subprocess_exec(
        *TOKENWIRE,
        "serve",
        "--config",
        str(path),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("tokenwire serving on http://127.0.0.1:"), (
            line + (await proc.stderr.read()).decode()
        )
        async with httpx.AsyncClient(base_url=line.split()[-1], timeout=30) as client:
            response = await client.post("/v1/streams", json={"prompt": "hi"})
        assert response.status_code == 200 and "event: done" in response.text
        assert (tmp_path / "plain.db").is_file()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def test_config_errors_are_printed_one_line_each_without_a_traceback(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokenwire.toml"
    path.write_text('[server]\nprot = 8000\n[store]\nurl = "postgresql+psycopg2://u:pw@h/db"\n')
    env = {k: v for k, v in os.environ.items() if k != "TOKENWIRE_STORE__URL"}
    proc = await asyncio.create_subprocess_exec(
        *TOKENWIRE,
        "worker",
        "--config",
        str(path),
        stderr=asyncio.subprocess.PIPE,
        env={**env, "TOKENWIRE_PROVIDERS__LOCAL__N_THREADS": "2"},
    )
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    lines = err.decode().splitlines()
    assert proc.returncode == 2
    assert lines == [
        f"tokenwire: {path}: server.prot: unknown key (did you mean 'port'?)",
        f"tokenwire: {path}: store.url: unsupported database URL scheme 'postgresql+psycopg2': "
        "use sqlite:///PATH or postgresql://user:password@host/db (drivers aiosqlite and asyncpg)",
    ]
