"""Questions into search terms: words only, stopwords out, never query syntax."""

from __future__ import annotations

import pytest

from tokenwire.retrieval.query import (
    MAX_QUERY_TERMS,
    fts5_match_expression,
    query_terms,
)


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("How often should I descale the Lumen kettle?", ["often", "descale", "lumen", "kettle"]),
        ("What's the kettle's WARRANTY?", ["kettle", "warranty"]),
        ('kettle AND "descale*" NEAR(x, 2)', ["kettle", "descale", "near", "2"]),
        ("Is the café open at 7am?", ["café", "open", "7am"]),
        ("kettle kettle Kettle", ["kettle"]),
        ("snake_case-words", ["snake", "case", "words"]),
        ("кофе 咖啡 😀", ["кофе", "咖啡"]),
        ("what is the", []),
        ("", []),
        ("?! -- ** ()", []),
        ("a b c 1 2", ["1", "2"]),
        ("x" * 65 + " kettle", ["kettle"]),
    ],
)
def test_query_terms(query: str, terms: list[str]) -> None:
    assert query_terms(query) == terms


def test_query_terms_are_capped() -> None:
    terms = query_terms(" ".join(f"t{i}" for i in range(100)))
    assert terms == [f"t{i}" for i in range(MAX_QUERY_TERMS)]


def test_fts5_expression_quotes_every_term() -> None:
    assert fts5_match_expression(["kettle", "near"]) == '"kettle" OR "near"'
