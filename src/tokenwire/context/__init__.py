"""Conversation context: fitting earlier turns into a provider's context window.

- :mod:`.tokens` counts a prompt with the provider's own tokenizer (llama.cpp, tiktoken) or a
  conservative estimate, and knows each provider's context window;
- :mod:`.fit` (sans-I/O) keeps the newest whole turns that fit, or a summary in place of older
  ones, and reports what it left out;
- :mod:`.summary` asks a provider, at background priority, for a summary of turns.
"""

from .fit import ContextFit, ContextSummary, ContextTooLong, HistoryTurn, fit_context
from .summary import SummaryFailed, summarize, summary_request, summary_text
from .tokens import (
    CounterUnavailable,
    EstimateCounter,
    LlamaTokenCounter,
    TiktokenCounter,
    TokenCounter,
    context_window_for,
    counter_for,
    estimate_tokens,
    tiktoken_encoding_for,
)

__all__ = [
    "ContextFit",
    "ContextSummary",
    "ContextTooLong",
    "CounterUnavailable",
    "EstimateCounter",
    "HistoryTurn",
    "LlamaTokenCounter",
    "SummaryFailed",
    "TiktokenCounter",
    "TokenCounter",
    "context_window_for",
    "counter_for",
    "estimate_tokens",
    "fit_context",
    "summarize",
    "summary_request",
    "summary_text",
    "tiktoken_encoding_for",
]
