# ruff: noqa: RUF001 - chunk titles join headings with U+203A, a look-alike of ">"
"""Chunking: sections and titles, anchors, HTML extraction, splitting long text, empty input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.retrieval.chunking import (
    Chunk,
    chunk_document,
    document_kind,
    pack_blocks,
    slugify,
    split_long,
)


def md(text: str, *, max_chars: int = 1200, fallback: str = "notes") -> tuple[str, list[Chunk]]:
    doc = chunk_document(text, kind="markdown", fallback_title=fallback, max_chars=max_chars)
    return doc.title, list(doc.chunks)


def html(text: str, *, fallback: str = "page") -> tuple[str, list[Chunk]]:
    doc = chunk_document(text, kind="html", fallback_title=fallback)
    return doc.title, list(doc.chunks)


def words(text: str) -> list[str]:
    return text.split()


# -- Markdown --------------------------------------------------------------------------------


def test_markdown_headings_give_titles_and_anchors() -> None:
    title, chunks = md(
        "# Lumen Kettle\n\nIntro text.\n\n## Care\n\nKeep it dry.\n\n"
        "### Descaling the kettle\n\nEvery 4 weeks.\n\n## Warranty\n\nTwo years.\n"
    )
    assert title == "Lumen Kettle"
    assert [(c.ordinal, c.title, c.heading, c.anchor, c.text) for c in chunks] == [
        (0, "Lumen Kettle", None, None, "Intro text."),
        (1, "Lumen Kettle › Care", "Care", "care", "Keep it dry."),
        (
            2,
            "Lumen Kettle › Care › Descaling the kettle",
            "Care › Descaling the kettle",
            "descaling-the-kettle",
            "Every 4 weeks.",
        ),
        (3, "Lumen Kettle › Warranty", "Warranty", "warranty", "Two years."),
    ]


def test_markdown_without_h1_takes_the_fallback_title() -> None:
    title, chunks = md("Some text first.\n\n## Setup\n\nRun it.\n", fallback="guide")
    assert title == "guide"
    assert [(c.title, c.anchor) for c in chunks] == [("guide", None), ("guide › Setup", "setup")]


def test_markdown_front_matter_title_wins_and_is_not_text() -> None:
    title, chunks = md("---\ntitle: 'Orbit Lock'\nlayout: page\n---\n\nThe lock.\n")
    assert title == "Orbit Lock"
    assert [c.text for c in chunks] == ["The lock."]


def test_markdown_duplicate_headings_get_numbered_anchors_like_github() -> None:
    _, chunks = md("# Doc\n\n## Usage\n\na\n\n## Usage\n\nb\n\n## Usage\n\nc\n")
    assert [c.anchor for c in chunks] == ["usage", "usage-1", "usage-2"]


def test_markdown_setext_headings_and_closing_hashes() -> None:
    title, chunks = md(
        "Big Title\n=========\n\nIntro.\n\nPart two\n--------\n\nMore.\n\n## Done ##\n\nEnd."
    )
    assert title == "Big Title"
    assert [(c.title, c.text) for c in chunks] == [
        ("Big Title", "Intro."),
        ("Big Title › Part two", "More."),
        ("Big Title › Done", "End."),
    ]


def test_markdown_code_fences_are_text_not_headings() -> None:
    _, chunks = md("# Doc\n\n```sh\n# not a heading\nmake   test\n```\n\n#hashtag is text\n")
    assert len(chunks) == 1
    assert chunks[0].title == "Doc"
    assert chunks[0].text == "# not a heading\nmake   test\n\n#hashtag is text"


def test_markdown_inline_markup_is_removed_and_wrapped_lines_joined() -> None:
    _, chunks = md(
        "# Doc\n\nSee **the [manual](https://x.example/m)** and `make_test --fast`,\n"
        "an _emphasis_, ![a logo](logo.png) and <kbd>Ctrl</kbd> &amp; more.\n\n"
        "- first item\n- second\n  continued\n\n> quoted *text*\n\n<!-- hidden comment -->\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    assert [c.text for c in chunks] == [
        "See the manual and make_test --fast, an emphasis, a logo and Ctrl & more.\n\n"
        "- first item\n- second continued\n\nquoted text\n\n| a | b |\n| 1 | 2 |"
    ]


def test_markdown_heading_path_resets_at_a_higher_level() -> None:
    _, chunks = md("# D\n\n## A\n\n### A1\n\nx\n\n## B\n\ny\n\n#### B deep\n\nz\n")
    assert [c.title for c in chunks] == ["D › A › A1", "D › B", "D › B › B deep"]


def test_a_second_h1_is_a_section() -> None:
    _, chunks = md("# Guide\n\nText.\n\n# Appendix\n\nMore.\n")
    assert [(c.title, c.anchor) for c in chunks] == [
        ("Guide", None),
        ("Guide › Appendix", "appendix"),
    ]


def test_sections_pack_paragraphs_up_to_the_limit() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 20 for i in range(10)]
    _, chunks = md("# Doc\n\n" + "\n\n".join(paragraphs), max_chars=300)
    assert len(chunks) > 1
    assert all(len(c.text) <= 300 for c in chunks)
    # Paragraph boundaries are kept: no paragraph is split between two chunks.
    for chunk in chunks:
        for part in chunk.text.split("\n\n"):
            assert part.strip() in [p.strip() for p in paragraphs]
    assert words(" ".join(c.text for c in chunks)) == words(" ".join(paragraphs))
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_a_huge_paragraph_is_split_at_sentence_ends() -> None:
    sentences = [f"Sentence number {i} says something about kettles." for i in range(100)]
    _, chunks = md("# Doc\n\n" + " ".join(sentences))
    assert len(chunks) > 3
    assert all(len(c.text) <= 1200 for c in chunks)
    assert all(c.text.endswith("kettles.") for c in chunks)
    assert words(" ".join(c.text for c in chunks)) == words(" ".join(sentences))


def test_a_huge_sentence_is_split_between_words() -> None:
    text = " ".join(f"word{i}" for i in range(1000))
    pieces = split_long(text, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert words(" ".join(pieces)) == words(text)


def test_only_a_word_longer_than_a_chunk_is_cut() -> None:
    pieces = split_long("short " + "x" * 250 + " tail", 100)
    assert all(len(p) <= 100 for p in pieces)
    assert "".join(pieces).replace(" ", "") == ("short" + "x" * 250 + "tail")


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("markdown", ""),
        ("markdown", "   \n\n\t\n"),
        ("markdown", "# Only a title\n\n## And a heading\n"),
        ("markdown", "```\n```\n<!-- nothing -->\n"),
        ("html", "<html><head><title>T</title><script>x = 1</script></head><body></body></html>"),
        ("text", ""),
        ("text", "\n\n  \n"),
    ],
)
def test_documents_without_text_have_no_chunks(kind: str, text: str) -> None:
    assert chunk_document(text, kind=kind, fallback_title="x").chunks == ()  # type: ignore[arg-type]


# -- HTML ------------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html><head>
  <title>Ferry   Times</title>
  <style>.x { color: red }</style>
  <script>var secret = "never indexed"; if (a < b) { document.write("<h2>fake</h2>") }</script>
</head>
<body>
  <nav><a href="/">Home</a> <h2>Menu heading</h2></nav>
  <noscript>enable javascript</noscript>
  <h1>Ferry Times</h1>
  <p>Boats   leave
     <b>daily</b>.<br>Even on Sundays.</p>
  <h2 id="fares-2024">Fares &amp; tickets</h2>
  <ul><li>Adult: $7</li><li><p>Child: $3</p></li></ul>
  <table><tr><th>Day</th><th>First</th></tr><tr><td>Mon</td><td>6:15</td></tr></table>
  <h3>Notes <a id="notes"></a></h3>
  <pre>line one
   indented</pre>
  <div>Last <span>words</span></div>
</body></html>
"""


def test_html_title_headings_and_text() -> None:
    title, chunks = html(PAGE)
    assert title == "Ferry Times"
    assert [(c.title, c.anchor) for c in chunks] == [
        ("Ferry Times", None),
        ("Ferry Times › Fares & tickets", "fares-2024"),
        ("Ferry Times › Fares & tickets › Notes", "notes"),
    ]
    assert chunks[0].text == "Boats leave daily.\nEven on Sundays."
    assert chunks[1].text == "- Adult: $7\n\n- Child: $3\n\nDay | First\nMon | 6:15"
    assert chunks[2].text == "line one\n   indented\n\nLast words"


def test_html_skips_script_style_and_nav() -> None:
    _, chunks = html(PAGE)
    everything = " ".join(c.title + " " + c.text for c in chunks)
    for hidden in ("secret", "never indexed", "color", "Home", "Menu heading", "javascript"):
        assert hidden not in everything


def test_html_without_title_uses_h1_then_fallback() -> None:
    assert html("<h1>Heading One</h1><p>x</p>")[0] == "Heading One"
    title, chunks = html("<p>Only text.</p>", fallback="stem")
    assert title == "stem"
    assert [c.text for c in chunks] == ["Only text."]


def test_html_heading_without_id_gets_a_slug() -> None:
    _, chunks = html("<title>T</title><h2>Opening Hours (2024)</h2><p>9 to 5</p>")
    assert chunks[0].anchor == "opening-hours-2024"


# -- plain text ------------------------------------------------------------------------------


def test_text_first_short_line_is_the_title() -> None:
    doc = chunk_document(
        "Harbor Café hours\n\nOpen 7 to 6.\n\nClosed  on\nSundays.\n",
        kind="text",
        fallback_title="harbor",
    )
    assert doc.title == "Harbor Café hours"
    assert [c.text for c in doc.chunks] == ["Open 7 to 6.\n\nClosed on\nSundays."]
    assert doc.chunks[0].title == "Harbor Café hours"
    assert doc.chunks[0].anchor is None


def test_text_first_line_that_is_a_sentence_stays_text() -> None:
    doc = chunk_document("The café opens at 7.\n\nIt closes at 6.", kind="text", fallback_title="c")
    assert doc.title == "The café opens at 7."
    assert [c.text for c in doc.chunks] == ["The café opens at 7.\n\nIt closes at 6."]


def test_text_with_a_long_first_line_takes_the_fallback_title() -> None:
    first = "word " * 40
    doc = chunk_document(first + "\n\nmore", kind="text", fallback_title="stem")
    assert doc.title == "stem"
    assert doc.chunks[0].text.startswith("word word")


# -- helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Hello, World!", "hello-world"),
        ("Weekend & holiday crossings", "weekend--holiday-crossings"),
        ("Déjà vu", "déjà-vu"),
        ("API_v2 (beta)", "api_v2-beta"),
        ("  Trim me  ", "trim-me"),
        ("Why does the LED ring blink red?", "why-does-the-led-ring-blink-red"),
    ],
)
def test_slugify_is_githubs(heading: str, slug: str) -> None:
    assert slugify(heading) == slug


def test_document_kind_by_suffix() -> None:
    assert document_kind("a/b.MD") == "markdown"
    assert document_kind("x.markdown") == "markdown"
    assert document_kind("x.htm") == "html"
    assert document_kind("x.HTML") == "html"
    assert document_kind("notes.txt") == "text"
    assert document_kind("report.pdf") is None
    assert document_kind("Makefile") is None


def test_crlf_and_control_characters_are_normalised() -> None:
    _, chunks = md("# T\r\n\r\nline\x00 one\r\nline two\r\n")
    assert [c.text for c in chunks] == ["line one line two"]


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError):
        chunk_document("x", kind="text", fallback_title="x", max_chars=0)


_WORDS = st.text(
    alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=30
)
_SEPARATORS = st.sampled_from([" ", " ", " ", ". ", "\n", "\n\n", "! ", ", "])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(_WORDS, _SEPARATORS), min_size=0, max_size=200),
    st.integers(min_value=40, max_value=400),
)
def test_chunks_never_exceed_the_limit_and_keep_every_word(
    parts: list[tuple[str, str]], max_chars: int
) -> None:
    text = "".join(word + sep for word, sep in parts)
    doc = chunk_document(text, kind="text", fallback_title="t", max_chars=max_chars)
    assert all(0 < len(c.text) <= max_chars for c in doc.chunks)
    original = re.findall(r"\w+", text)
    found = re.findall(r"\w+", " ".join(c.text for c in doc.chunks))
    # Every word is in a chunk, in order; only a first line that became the title is not.
    removed = original[: len(original) - len(found)]
    assert original[len(removed) :] == found
    assert not removed or removed == re.findall(r"\w+", doc.title)


def test_pack_blocks_joins_with_blank_lines() -> None:
    assert pack_blocks(["a", "b", "c"], 5) == ["a\n\nb", "c"]
    assert pack_blocks([], 5) == []
