from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tokenwire.config import (
    LocalProviderSettings,
    OpenAIProviderSettings,
    ScriptedProviderSettings,
    Settings,
    load_settings,
)


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
