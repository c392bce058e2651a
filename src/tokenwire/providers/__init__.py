"""Upstream adapters. Each turns its vendor's chunks into the chunks of ``providers.base``."""

from .base import (
    Begin,
    Finish,
    FinishReason,
    GenerationRequest,
    Message,
    Provider,
    ProviderChunk,
    ProviderError,
    ProviderHealth,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)
from .scripted import Script, ScriptedProvider

__all__ = [
    "Begin",
    "Finish",
    "FinishReason",
    "GenerationRequest",
    "Message",
    "Provider",
    "ProviderChunk",
    "ProviderError",
    "ProviderHealth",
    "Script",
    "ScriptedProvider",
    "TextChunk",
    "ToolCallChunk",
    "UsageChunk",
]
