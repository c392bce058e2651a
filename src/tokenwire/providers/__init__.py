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
    upstream_failure,
)
from .failures import FAILURES, FailureCode, FailureKind, redact
from .scripted import Script, ScriptedProvider

__all__ = [
    "FAILURES",
    "Begin",
    "FailureCode",
    "FailureKind",
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
    "redact",
    "upstream_failure",
]
