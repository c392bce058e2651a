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
    SourceChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    ToolSpec,
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
    "SourceChunk",
    "TextChunk",
    "ToolCallChunk",
    "ToolCallRequest",
    "ToolSpec",
    "UsageChunk",
]
