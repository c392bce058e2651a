"""Documents into titled chunks (pure: text in, chunks out, no I/O).

A document is read into sections, one per heading (Markdown ``#``..``######`` and setext
headings, HTML ``<h1>``..``<h6>``; a plain-text file is one section), each a list of blocks
(paragraphs, list items, table rows, code). A section's blocks are packed into chunks of at
most ``max_chars`` characters on block boundaries; a block longer than that is cut at a line or
sentence end, else between words (a single word longer than a chunk is the only thing ever
cut).

A chunk's title is the document's title, then ``TITLE_SEPARATOR`` (U+203A between spaces)
and the path of headings above the chunk (the heading that gave the document its title left
out); its anchor is the GitHub-style slug of its heading (in HTML, the heading's ``id`` when it
has one).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePath
from typing import Literal

DocumentKind = Literal["markdown", "html", "text"]

SUFFIXES: dict[str, DocumentKind] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".txt": "text",
}
"""The file name endings a knowledge base reads, and as what."""

MAX_CHUNK_CHARS = 1200
TITLE_SEPARATOR = " \u203a "
MAX_TEXT_TITLE_CHARS = 120
"""A plain-text file's first line is its title when shorter than this."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    ordinal: int
    """Position in the document, from 0."""
    title: str
    """The document's title, then ``TITLE_SEPARATOR`` and the heading path when there is one."""
    heading: str | None
    """The heading path below the document's title (None: the document's own text)."""
    anchor: str | None
    """The fragment of the chunk's heading (None: the document's own text)."""
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkedDocument:
    title: str
    chunks: tuple[Chunk, ...]


def document_kind(path: PurePath | str) -> DocumentKind | None:
    """What a file is read as, by its name's ending; None when it is not supported."""
    return SUFFIXES.get(PurePath(path).suffix.lower())


def chunk_document(
    text: str, *, kind: DocumentKind, fallback_title: str, max_chars: int = MAX_CHUNK_CHARS
) -> ChunkedDocument:
    """The title and chunks of a document; ``fallback_title`` (say, the file's stem) when it
    names no title itself. A document without text has no chunks."""
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    text = _normalise_newlines(text)
    if kind == "markdown":
        title, sections = _parse_markdown(text)
    elif kind == "html":
        title, sections = _parse_html(text)
    elif kind == "text":
        title, sections = _parse_text(text)
    else:  # pragma: no cover - Literal exhausted
        raise ValueError(f"unknown document kind {kind!r}")
    title = title or fallback_title
    return ChunkedDocument(title=title, chunks=tuple(_assemble(title, sections, max_chars)))


def slugify(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
    lowered = heading.strip().lower()
    kept = re.sub(r"[^\w\- ]", "", lowered)
    return kept.replace(" ", "-")


def pack_blocks(blocks: Iterable[str], max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """Blocks joined with blank lines into texts of at most ``max_chars`` (a longer block is
    first split at line, sentence or word boundaries)."""
    pieces: list[str] = []
    for block in blocks:
        pieces.extend(split_long(block, max_chars))
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        added = len(piece) + (2 if current else 0)
        if current and size + added > max_chars:
            chunks.append("\n\n".join(current))
            current, size, added = [], 0, len(piece)
        current.append(piece)
        size += added
    if current:
        chunks.append("\n\n".join(current))
    return chunks


_SENTENCE_END = re.compile(r"[.!?…][\"')\]\u00bb\u201d\u2019]*(?=\s)")


def split_long(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """``text`` in pieces of at most ``max_chars``, cut at the last line end or sentence end
    of each window (if past its middle), else at its last space."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > max_chars:
        window = rest[: max_chars + 1]
        best = window.rfind("\n")
        for match in _SENTENCE_END.finditer(window):
            best = max(best, match.end())
        if best < max_chars // 2:
            best = max(best, window.rfind(" "), window.rfind("\n"))
        if best <= 0:
            best = max_chars  # one word longer than a chunk: the only cut inside a word
        head, rest = rest[:best].rstrip(), rest[best:].lstrip()
        if head:
            pieces.append(head)
    if rest:
        pieces.append(rest)
    return pieces


# -- sections ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Section:
    level: int
    """1..6 for a heading; 0 for the text before the first heading."""
    heading: str | None
    anchor: str | None
    blocks: list[str] = field(default_factory=list)


class _Anchors:
    """Unique anchors per document, as GitHub makes them: ``slug``, ``slug-1``, ``slug-2``."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def make(self, heading: str, explicit: str | None = None) -> str | None:
        if explicit:
            self._seen.setdefault(explicit, 0)
            return explicit
        slug = slugify(heading)
        if not slug:
            return None
        count = self._seen.get(slug)
        self._seen[slug] = 0 if count is None else count + 1
        return slug if count is None else f"{slug}-{count + 1}"


def _assemble(title: str, sections: list[_Section], max_chars: int) -> Iterable[Chunk]:
    ordinal = 0
    stack: list[tuple[int, str | None]] = []  # (level, heading; None for the title heading)
    title_seen = False
    for section in sections:
        if section.heading is not None:
            while stack and stack[-1][0] >= section.level:
                stack.pop()
            is_title = not title_seen and section.level == 1 and section.heading == title
            title_seen = title_seen or is_title
            stack.append((section.level, None if is_title else section.heading))
        path = [heading for _level, heading in stack if heading is not None]
        heading_path = TITLE_SEPARATOR.join(path) if path else None
        chunk_title = title + TITLE_SEPARATOR + heading_path if heading_path else title
        anchor = section.anchor if heading_path else None
        for text in pack_blocks(section.blocks, max_chars):
            yield Chunk(
                ordinal=ordinal, title=chunk_title, heading=heading_path, anchor=anchor, text=text
            )
            ordinal += 1


# -- text helpers ----------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")


def _normalise_newlines(text: str) -> str:
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _collapse(text: str) -> str:
    """Runs of spaces to one space; lines stripped; empty lines dropped."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


# -- Markdown --------------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+")
_TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-{1,}:?\s*(?:\|\s*:?-{1,}:?\s*)*\|?\s*$")
_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s+\S+")
_BLOCKQUOTE = re.compile(r"^ {0,3}>[ ]?")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_FRONT_MATTER_END = re.compile(r"^(?:---|\.\.\.)\s*$")
_FRONT_MATTER_TITLE = re.compile(r"^title:\s*(.+?)\s*$")

_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # image: its alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # link: its text
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # reference link
    (re.compile(r"<((?:https?|mailto):[^>\s]+)>"), r"\1"),  # autolink
    (re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>"), ""),  # inline HTML tag
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # strong
    (re.compile(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])"), r"\1"),  # emphasis
    (re.compile(r"(?<![\w_])_(?=\S)([^_]+?)(?<=\S)_(?![\w_])"), r"\1"),  # emphasis
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), r"\1"),  # strikethrough
    (re.compile(r"\\([!-/:-@\[-`{-~])"), r"\1"),  # backslash escape
)


def _clean_inline(text: str) -> str:
    """Markdown inline markup to its text (code spans kept verbatim, without backticks)."""
    parts: list[str] = []
    position = 0
    for match in _CODE_SPAN.finditer(text):
        parts.append(_clean_prose(text[position : match.start()]))
        parts.append(match.group(2).strip())
        position = match.end()
    parts.append(_clean_prose(text[position:]))
    return "".join(parts)


def _clean_prose(text: str) -> str:
    for pattern, replacement in _INLINE_RULES:
        text = pattern.sub(replacement, text)
    return html.unescape(text)


def _front_matter(lines: list[str]) -> tuple[str | None, list[str]]:
    if not lines or lines[0].strip() != "---":
        return None, lines
    for index in range(1, min(len(lines), 200)):
        if _FRONT_MATTER_END.match(lines[index]):
            title = None
            for line in lines[1:index]:
                match = _FRONT_MATTER_TITLE.match(line)
                if match:
                    title = match.group(1).strip("'\"").strip() or None
            return title, lines[index + 1 :]
    return None, lines


def _markdown_block(lines: list[str]) -> str:
    """A paragraph's lines as one block: wrapped lines joined, list items and table rows kept
    one per line, markup removed."""
    out: list[str] = []
    hard_break = False
    for raw in lines:
        line = _BLOCKQUOTE.sub("", raw)
        if _LINK_DEFINITION.match(line) or (_TABLE_DELIMITER.match(line) and "-" in line):
            continue
        cleaned = _SPACES.sub(" ", _clean_inline(line)).strip()
        if not cleaned:
            continue
        starts_line = bool(_LIST_ITEM.match(line)) or line.lstrip().startswith("|")
        if out and not starts_line and not hard_break and not out[-1].startswith("|"):
            out[-1] = out[-1] + " " + cleaned
        else:
            out.append(cleaned)
        hard_break = raw.endswith("  ") or raw.endswith("\\")
    return "\n".join(out)


def _parse_markdown(text: str) -> tuple[str | None, list[_Section]]:
    title, lines = _front_matter(text.split("\n"))
    text = _HTML_COMMENT.sub("", "\n".join(lines))
    anchors = _Anchors()
    sections = [_Section(0, None, None)]
    paragraph: list[str] = []
    fence: str | None = None
    code: list[str] = []

    def flush() -> None:
        block = _markdown_block(paragraph)
        if block:
            sections[-1].blocks.append(block)
        paragraph.clear()

    def open_section(level: int, raw_heading: str) -> None:
        nonlocal title
        heading = _SPACES.sub(" ", _clean_inline(raw_heading)).strip()
        if not heading:
            return
        if title is None and level == 1:
            title = heading
        sections.append(_Section(level, heading, anchors.make(heading)))

    for line in text.split("\n"):
        if fence is not None:
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                block = "\n".join(code).strip("\n")
                if block.strip():
                    sections[-1].blocks.append(block)
                fence, code = None, []
            else:
                code.append(line.rstrip())
            continue
        if match := _FENCE.match(line):
            flush()
            fence = match.group(1)
            continue
        if match := _ATX.match(line):
            flush()
            open_section(len(match.group(1)), match.group(2) or "")
            continue
        setext = _SETEXT.match(line)
        if setext and paragraph and not any(_LIST_ITEM.match(p) for p in paragraph):
            raw_heading = " ".join(p.strip() for p in paragraph)
            paragraph.clear()
            open_section(1 if setext.group(1)[0] == "=" else 2, raw_heading)
            continue
        if not line.strip() or _THEMATIC_BREAK.match(line):
            flush()
            continue
        paragraph.append(line)
    if fence is not None and "\n".join(code).strip():  # an unclosed fence runs to the end
        sections[-1].blocks.append("\n".join(code).strip("\n"))
    flush()
    return title, sections


# -- HTML ------------------------------------------------------------------------------------

_SKIPPED_TAGS = frozenset({"script", "style", "nav", "noscript", "template", "svg", "iframe"})
_BLOCK_TAGS = frozenset(
    """address article aside blockquote body dd details dialog div dl dt fieldset figcaption
    figure footer form header hgroup hr html li main menu ol p pre section summary ul
    caption""".split()
)
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_VOID_TAGS = frozenset(
    "area base br col embed hr img input link meta param source track wbr".split()
)


class _HTMLExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: str | None = None
        self.anchors = _Anchors()
        self.sections = [_Section(0, None, None)]
        self._text: list[str] = []
        self._skip: list[str] = []
        self._pre = 0
        self._title: list[str] | None = None
        self._heading: tuple[int, list[str], str | None] | None = None
        self._table = 0
        self._rows: list[str] = []
        self._prefix = ""

    # Paragraphs and headings.

    def _flush(self) -> None:
        if self._table:
            self._text.append(" ")
            return
        raw = "".join(self._text)
        self._text = []
        block = raw.strip("\n") if self._pre else _collapse(raw)
        if block.strip():
            self.sections[-1].blocks.append(self._prefix + block)
            self._prefix = ""

    def _flush_row(self) -> None:
        row = _collapse("".join(self._text).replace("\n", " "))
        self._text = []
        if row.strip(" |"):
            self._rows.append(row.strip(" |").strip())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            if tag == self._skip[-1] or (tag in _SKIPPED_TAGS and tag not in _VOID_TAGS):
                self._skip.append(tag)
            return
        if tag in _SKIPPED_TAGS:
            self._skip.append(tag)
            return
        element_id = dict(attrs).get("id")
        if tag == "title" and self.title is None and self._heading is None:
            self._title = []
        elif tag in _HEADINGS and self._heading is None:
            self._flush()
            self._heading = (_HEADINGS[tag], [], element_id)
        elif self._heading is not None:
            if element_id and self._heading[2] is None and tag == "a":
                self._heading = (self._heading[0], self._heading[1], element_id)
        elif tag == "br":
            self._text.append("\n")
        elif tag == "table":
            if not self._table:
                self._flush()
            self._table += 1
        elif self._table and tag in ("td", "th"):
            if "".join(self._text).strip():
                self._text.append(" | ")
        elif self._table and tag == "tr":
            self._flush_row()
        elif tag == "pre":
            self._flush()
            self._pre += 1
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "li":
                self._prefix = "- "

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
            return
        if tag == "title" and self._title is not None:
            self.title = _collapse(" ".join(self._title).replace("\n", " ")) or None
            self._title = None
        elif tag in _HEADINGS and self._heading is not None:
            level, parts, element_id = self._heading
            self._heading = None
            heading = _collapse("".join(parts).replace("\n", " "))
            if heading:
                self.sections.append(
                    _Section(level, heading, self.anchors.make(heading, element_id))
                )
        elif self._heading is not None:
            return
        elif tag == "table" and self._table:
            self._table -= 1
            if not self._table:
                self._flush_row()
                if self._rows:
                    self.sections[-1].blocks.append("\n".join(self._rows))
                self._rows = []
        elif self._table and tag == "tr":
            self._flush_row()
        elif tag == "pre" and self._pre:
            self._flush()
            self._pre -= 1
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._title is not None:
            self._title.append(data)
        elif self._heading is not None:
            self._heading[1].append(data)
        elif self._pre:
            self._text.append(data)
        else:
            self._text.append(_SPACES.sub(" ", data.replace("\n", " ")))

    def finish(self) -> None:
        self.close()
        if self._table:
            self._flush_row()
            self._table = 0
            if self._rows:
                self.sections[-1].blocks.append("\n".join(self._rows))
        self._pre = 0
        self._flush()


def _parse_html(text: str) -> tuple[str | None, list[_Section]]:
    parser = _HTMLExtractor()
    parser.feed(text)
    parser.finish()
    title = parser.title
    if title is None:
        title = next((s.heading for s in parser.sections if s.level == 1), None)
    return title, parser.sections


# -- plain text ------------------------------------------------------------------------------


def _parse_text(text: str) -> tuple[str | None, list[_Section]]:
    paragraphs = [_collapse(p) for p in re.split(r"\n[^\S\n]*\n", text)]
    paragraphs = [p for p in paragraphs if p]
    title = None
    if paragraphs:
        first_line = paragraphs[0].split("\n", 1)[0]
        if len(first_line) < MAX_TEXT_TITLE_CHARS:
            title = first_line
            # A first line standing alone, not a sentence, is a heading: not part of the text.
            if paragraphs[0] == first_line and not first_line.endswith((".", "!", "?", ",", ";")):
                paragraphs = paragraphs[1:]
    return title, [_Section(0, None, None, paragraphs)]


__all__ = [
    "MAX_CHUNK_CHARS",
    "MAX_TEXT_TITLE_CHARS",
    "SUFFIXES",
    "TITLE_SEPARATOR",
    "Chunk",
    "ChunkedDocument",
    "DocumentKind",
    "chunk_document",
    "document_kind",
    "pack_blocks",
    "slugify",
    "split_long",
]
