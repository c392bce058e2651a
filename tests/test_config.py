from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tokenwire.config import (
    LocalProviderSettings,
    OpenAIProviderSettings,
    RetrievalRouteSettings,
    ScriptedProviderSettings,
    Settings,
    load_settings,
)
from tokenwire.config_errors import ConfigError


def test_defaults_need_no_file() -> None:
    settings = load_settings()
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8000)
    assert isinstance(settings.providers["local"], LocalProviderSettings)
    assert settings.routes["default"].providers == ["local"]
    assert not settings.scripted and "scripted" not in settings.routes


def test_toml_file_and_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text("""
[server]
port = 9001
[providers.gpt]
kind = "openai"
base_url = "http://127.0.0.1:8001/v1"
model = "x"
[routes.default]
providers = ["gpt"]
[deadlines]
idle_s = 3
""")
    monkeypatch.setenv("TOKENWIRE_SERVER__HOST", "0.0.0.0")
    monkeypatch.setenv("TOKENWIRE_DEADLINES__TOTAL_S", "42")
    settings = load_settings(path)
    assert settings.server.port == 9001 and settings.server.host == "0.0.0.0"
    assert isinstance(settings.providers["gpt"], OpenAIProviderSettings)
    assert (settings.deadlines.idle_s, settings.deadlines.total_s) == (3, 42)
    monkeypatch.setenv("TOKENWIRE_CONFIG", str(path))
    assert load_settings().server.port == 9001


def test_scripted_adds_its_provider_and_route() -> None:
    settings = Settings(scripted=True)
    assert isinstance(settings.providers["scripted"], ScriptedProviderSettings)
    assert settings.routes["scripted"].providers == ["scripted"]


@pytest.mark.parametrize(
    "bad",
    [
        {"routes": {"default": {"providers": ["nope"]}}},
        {"default_route": "missing"},
        {"server": {"port": 70000}},
        {"providers": {"x": {"kind": "martian"}}},
        {"unknown_section": {}},
        {"deadlines": {"idle_s": -1}},
    ],
)
def test_invalid_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)  # type: ignore[arg-type]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_one_provider_field_from_the_environment_keeps_the_providers_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/deploy.md's worker unit: the shared file names no provider, one variable tunes it.
    monkeypatch.setenv("TOKENWIRE_PROVIDERS__LOCAL__N_THREADS", "2")
    local = load_settings().providers["local"]
    assert isinstance(local, LocalProviderSettings) and local.n_threads == 2
    path = tmp_path / "c.toml"
    path.write_text('[providers.local]\nkind = "local"\nn_ctx = 4096\n')
    local = load_settings(path).providers["local"]
    assert isinstance(local, LocalProviderSettings) and (local.n_threads, local.n_ctx) == (2, 4096)


def test_a_provider_named_after_its_kind_needs_no_kind() -> None:
    settings = Settings(
        providers={"openai": {"model": "gpt-4o"}},  # type: ignore[dict-item]
        routes={"default": {"providers": ["openai"]}},  # type: ignore[dict-item]
    )
    assert isinstance(settings.providers["openai"], OpenAIProviderSettings)


@pytest.mark.parametrize(("written", "on"), [("true", True), ("false", False)])
def test_retrieval_true_is_on_with_the_defaults(tmp_path: Path, written: str, on: bool) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[routes.default]\nproviders = ["local"]\nretrieval = {written}\n')
    retrieval = load_settings(path).routes["default"].retrieval
    assert (retrieval is not None) is on
    if retrieval is not None:
        assert retrieval.top_k == RetrievalRouteSettings().top_k


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("sqlite+aiosqlite:///y.db", "sqlite+aiosqlite:///y.db"),
        ("", ""),
    ],
)
def test_plain_store_urls_get_the_async_driver(written: str, meant: str) -> None:
    assert Settings(store={"url": written}).store.url == meant  # type: ignore[arg-type]


def test_config_errors_are_one_line_each_with_file_key_and_suggestion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokenwire.toml"
    path.write_text(
        '[providers.local]\nn_thread = 2\n[store]\nurl = "mysql://u:secret@h/db"\n'
        '[providers.gpt]\nkind = "martian"\n'
    )
    monkeypatch.delenv("TOKENWIRE_STORE__URL", raising=False)  # the suite's own store
    monkeypatch.setenv("TOKENWIRE_LIMITS__MAX_BODY_BYTES", "5")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    lines = caught.value.lines
    assert f"{path}: providers.local.n_thread: unknown key (did you mean 'n_threads'?)" in lines
    assert any(line.startswith(f"{path}: store.url: unsupported database") for line in lines)
    assert not any("secret" in line for line in lines)
    assert any(line.startswith(f"{path}: providers.gpt: `kind` must be one of") for line in lines)
    assert any(
        line.startswith("TOKENWIRE_LIMITS__MAX_BODY_BYTES: limits.max_body_bytes: ")
        for line in lines
    )
    assert all("\n" not in line for line in lines) and len(lines) == 4


def test_a_file_that_is_not_toml_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "tokenwire.toml"
    path.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_settings(path)
    assert caught.value.lines[0].startswith(str(path))
