"""The output layer's public API is what ``__all__`` says: pinned so a change is deliberate."""

from __future__ import annotations

import tokenwire.output


def test_all_is_sorted_and_pinned() -> None:
    names = tokenwire.output.__all__

    def isort_style(name: str) -> tuple[int, str]:  # constants, classes, then the rest
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert names == sorted(names, key=isort_style)
    assert all(hasattr(tokenwire.output, name) for name in names)
    assert names == [
        "CLOSED",
        "DEFAULT_END",
        "DEFAULT_START",
        "HIDDEN",
        "UNCHANGED",
        "ExtractionSpec",
        "InlineOutput",
        "InlineSplitter",
        "OpenTail",
        "ParseOutcome",
        "PartialJSON",
        "PrefixValidator",
        "ResolvedSchema",
        "SchemaIssue",
        "SchemaRegistry",
        "Strategy",
        "answer_hash",
        "bounded_schema",
        "check_schema",
        "choose_strategy",
        "extraction_messages",
        "extraction_prompt",
        "inline_instructions",
        "loads",
        "parse_and_repair",
        "reask_messages",
        "valid_prefix",
        "validate",
    ]
