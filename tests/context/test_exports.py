"""The context package's public API is what ``__all__`` says: pinned so a change is deliberate."""

from __future__ import annotations

import tokenwire.context


def test_all_is_sorted_and_pinned() -> None:
    names = tokenwire.context.__all__

    def isort_style(name: str) -> tuple[int, str]:  # constants, classes, then the rest
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert names == sorted(names, key=isort_style)
    assert all(hasattr(tokenwire.context, name) for name in names)
    assert names == [
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
