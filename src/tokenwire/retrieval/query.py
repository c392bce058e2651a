"""From a natural-language question to search terms: words (Unicode letters and digits),
lowercased, without a small list of English stopwords, each at most once.

Both backends build their query only from these terms (SQLite FTS5: each quoted, joined with
``OR``; Postgres: one ``plainto_tsquery`` parameter per term, joined with ``||``), so no input
is ever read as query syntax: ``AND``, ``"``, ``*``, ``NEAR(``, ``-`` are words or nothing.
"""

from __future__ import annotations

import re

MAX_QUERY_TERMS = 32
MAX_TERM_CHARS = 64
"""Longer "words" (a pasted hash, a run of one letter) are no search terms."""

_WORD = re.compile(r"[^\W_]+")

STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your
    yours yourself yourselves tell please know
    """.split()
)
"""Words no answer is found by (Postgres' ``english`` configuration drops most of them too)."""


def query_terms(query: str, *, max_terms: int = MAX_QUERY_TERMS) -> list[str]:
    """The distinct search terms of ``query``, in order; ``[]`` when none is left."""
    terms: list[str] = []
    for match in _WORD.finditer(query.casefold()):
        word = match.group()
        if word in STOPWORDS or word in terms or len(word) > MAX_TERM_CHARS:
            continue
        if len(word) == 1 and "a" <= word <= "z":  # the s of "kettle's", the t of "don't"
            continue
        terms.append(word)
        if len(terms) == max_terms:
            break
    return terms


def fts5_match_expression(terms: list[str]) -> str:
    """An FTS5 ``MATCH`` expression: any of ``terms`` (each a quoted string, so never syntax)."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


__all__ = ["MAX_QUERY_TERMS", "MAX_TERM_CHARS", "STOPWORDS", "fts5_match_expression", "query_terms"]
