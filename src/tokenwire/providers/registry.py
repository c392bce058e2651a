"""Build providers from settings. Adapters are imported only when configured, so a deployment
that relays to an API never loads llama.cpp."""

from __future__ import annotations

from ..config import (
    AnthropicProviderSettings,
    LocalProviderSettings,
    OpenAIProviderSettings,
    ProviderSettings,
    ScriptedProviderSettings,
)
from .base import Provider
from .scripted import ScriptedProvider


def build_provider(name: str, settings: ProviderSettings) -> Provider:
    """The adapter for one ``[providers.NAME]`` section."""
    if isinstance(settings, LocalProviderSettings):
        from .local import LocalProvider

        return LocalProvider(name, settings)
    if isinstance(settings, OpenAIProviderSettings):
        from .openai import OpenAIProvider

        return OpenAIProvider(name, settings)
    if isinstance(settings, AnthropicProviderSettings):
        from .anthropic import AnthropicProvider

        return AnthropicProvider(name, settings)
    if isinstance(settings, ScriptedProviderSettings):
        return ScriptedProvider(name, settings.model)
    raise TypeError(f"unknown provider settings {type(settings).__name__}")
