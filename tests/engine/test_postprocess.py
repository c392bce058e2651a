"""The canonical answer: markers, artifacts and stray whitespace out; code untouched."""

from __future__ import annotations

import pytest

from tokenwire.engine.postprocess import canonical_answer, cited_numbers
from tokenwire.engine.sources import structured_sources, urls_in_text


@pytest.mark.parametrize(
    ("streamed", "citations", "answer"),
    [
        ("Paris is the capital [1].", 2, "Paris is the capital."),
        ("Paris[1][2] is big [1, 2] and old.", 2, "Paris is big and old."),
        ("Only [3] is out of range.", 2, "Only [3] is out of range."),
        ("No passages: [1] stays.", 0, "No passages: [1] stays."),
        ("A footnote[^1] goes.", 0, "A footnote goes."),
        ("Vendor marker【4:0†source】 goes.", 0, "Vendor marker goes."),
        ("A [link](https://x.example) stays.", 1, "A [link](https://x.example) stays."),
        ("The end.<end_of_turn>", 0, "The end."),
        ("Hi<|im_end|>\n<eos>", 0, "Hi"),
        ("too   many    spaces", 0, "too many spaces"),
        ("  indented:\n    kept  here", 0, "indented:\n    kept here"),
        ("line  \r\nnext\n\n\n\nlast\n", 0, "line\nnext\n\nlast"),
        ("code: `a[1]  b` and\n```\nx  =  arr[1]\n```\nafter [1]", 1, None),
    ],
)
def test_canonical_answer(streamed: str, citations: int, answer: str | None) -> None:
    if answer is None:
        answer = "code: `a[1]  b` and\n```\nx  =  arr[1]\n```\nafter"
    assert canonical_answer(streamed, citations=citations) == answer


def test_cited_numbers_in_first_citation_order_within_range() -> None:
    text = "b [2], a [1][2], c [1, 3], out [9], code `x[3]`"
    assert cited_numbers(text, citations=3) == [2, 1, 3]
    assert cited_numbers(text, citations=0) == []


def test_urls_in_text_drop_trailing_punctuation() -> None:
    found = urls_in_text("See https://a.example/x. And (https://b.example/y), or http://c.example!")
    assert [s.url for s in found] == [
        "https://a.example/x",
        "https://b.example/y",
        "http://c.example",
    ]
    assert {s.origin for s in found} == {"text"}


def test_structured_source_payloads() -> None:
    data = {
        "answer": "x",
        "sources": ["https://a.example", {"url": "https://b.example", "title": "B"}, 7],
        "results": [{"url": "https://c.example", "text": "ccc"}, {"no": "url"}],
    }
    found = structured_sources(data, origin="structured")
    assert [s.url for s in found] == ["https://a.example", "https://b.example", "https://c.example"]
    assert found[1].title == "B" and found[2].snippet == "ccc"
    assert [s.id for s in structured_sources([{"id": "doc-1"}], origin="o")] == ["doc-1"]
    assert structured_sources("just text", origin="o") == []
