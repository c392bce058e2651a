"""Every configuration example in README.md and docs/ loads as the CLI would load it, so an
example can never rot: each TOML block, and each environment-variable example (systemd units,
env files, compose environment lists) on top of its document's configuration file."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tokenwire.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?ms)^```(\w+)[^\n]*\n(.*?)^```")
ENV_LINE = re.compile(r"(?m)^\s*(?:Environment=|export\s+)?(TOKENWIRE_[A-Z0-9_]+)\s*[=:]\s*(\S*)")

PLACEHOLDERS = {"sha256:…": "sha256:" + "0" * 64}
"""What the docs write for a value the reader makes (`tokenwire keys new` prints the hash)."""

FRAGMENT_CONTEXT: dict[str, Any] = {
    "providers": {
        "local": {"kind": "local"},
        "gpt": {"kind": "openai"},
        "claude": {"kind": "anthropic"},
    },
    "routes": {
        "support": {"tiers": {"fast": ["local"], "smart": ["gpt", "claude"]}},
        "billing": {"providers": ["local"]},
        "default": {"providers": ["local"]},
    },
}
"""docs/turns.md builds one configuration across several blocks: the providers and routes its
other blocks define. A block is checked on top of them (its own keys win)."""


def _blocks(lang: str) -> list[Any]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in BLOCK.finditer(text):
            if match.group(1) == lang:
                line = text[: match.start()].count("\n") + 1
                found.append(pytest.param(doc, match.group(2), id=f"{doc.name}:{line}"))
    return found


def _filled(body: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        body = body.replace(placeholder, value)
    return body


@pytest.fixture(autouse=True)
def _no_tokenwire_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An example is read as a user's machine would: no TOKENWIRE_* from the suite."""
    for name in [n for n in os.environ if n.startswith("TOKENWIRE_")]:
        monkeypatch.delenv(name)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(("doc", "body"), _blocks("toml"))
def test_every_toml_example_is_a_valid_configuration(doc: Path, body: str, tmp_path: Path) -> None:
    path = tmp_path / "tokenwire.toml"
    path.write_text(_filled(body))
    if doc.name == "turns.md":
        Settings(**_deep_merge(FRAGMENT_CONTEXT, tomllib.loads(_filled(body))))
    else:
        load_settings(path)


def _env_examples() -> list[Any]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        shared = [m.group(2) for m in BLOCK.finditer(text) if m.group(1) == "toml"]
        for match in BLOCK.finditer(text):
            variables = dict(ENV_LINE.findall(match.group(2)))
            if variables:
                line = text[: match.start()].count("\n") + 1
                config = shared[0] if shared else None
                found.append(pytest.param(config, variables, id=f"{doc.name}:{line}"))
    return found


def test_the_deploy_guide_has_environment_examples() -> None:
    assert len(_env_examples()) >= 3  # the env file, the worker unit, the compose file


@pytest.mark.parametrize(("config", "variables"), _env_examples())
def test_every_environment_example_loads_with_its_documents_config(
    config: str | None,
    variables: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    path = None
    if config is not None:
        path = tmp_path / "tokenwire.toml"
        path.write_text(_filled(config))
    settings = load_settings(path)
    if "TOKENWIRE_PROVIDERS__LOCAL__N_THREADS" in variables:
        local = settings.providers["local"]
        assert getattr(local, "n_threads", None) == int(
            variables["TOKENWIRE_PROVIDERS__LOCAL__N_THREADS"]
        )
