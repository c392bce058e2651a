"""What every knowledge base shares: the passages a search returns, the result of adding a
file, and the :class:`KnowledgeBase` base class that reads, hashes and chunks files so that a
backend only stores chunks and searches them."""

from __future__ import annotations

import asyncio
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypedDict, runtime_checkable
from urllib.parse import quote, urldefrag, urljoin

from .chunking import Chunk, chunk_document, document_kind

DEFAULT_LIMIT = 4
"""Passages a search returns unless asked otherwise."""

AddStatus = Literal["added", "updated", "unchanged", "skipped"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Passage:
    """One chunk of a document, as a search found it."""

    id: str
    """The chunk's stable id: ``f"{document_id}#{ordinal}"``."""
    document_id: str
    """The stable id of the document (a hash of its source)."""
    title: str
    """The document's title, and the section's heading path when there is one, joined by
    ``chunking.TITLE_SEPARATOR`` (U+203A between spaces)."""
    url: str | None
    """The document's URL, with ``#anchor`` of the section's heading when there is one."""
    text: str
    score: float
    """Higher is better; comparable between passages of one search only."""


def passage_of_row(row: Sequence[Any]) -> Passage:
    """A search result row, ``(id, document_id, title, url, text, score)``, as a passage."""
    return Passage(
        id=row[0], document_id=row[1], title=row[2], url=row[3], text=row[4], score=float(row[5])
    )


@runtime_checkable
class Retriever(Protocol):
    """What answers a question with passages (a knowledge base; later maybe a vector store)."""

    async def search(self, query: str, *, limit: int = DEFAULT_LIMIT) -> list[Passage]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AddResult:
    """What adding one file did."""

    source: str
    """The file's absolute path: the document's identity in the knowledge base."""
    document_id: str
    title: str | None
    """The document's title (None when skipped)."""
    chunks: int
    """Chunks the document has in the knowledge base now (0 when skipped)."""
    status: AddStatus
    reason: str | None = None
    """Why it was skipped."""


class DocumentInfo(TypedDict):
    """One document of the knowledge base, as :meth:`KnowledgeBase.documents` lists it."""

    id: str
    source: str
    url: str | None
    title: str
    content_hash: str
    chunks: int
    added_at: datetime
    updated_at: datetime


DOCUMENT_COLUMNS = "id, source, url, title, content_hash, chunks, added_at, updated_at"
"""The ``kb_documents`` columns :func:`document_of_row` reads, in its order."""


def document_of_row(row: Sequence[Any], as_time: Callable[[Any], datetime]) -> DocumentInfo:
    """A ``SELECT {DOCUMENT_COLUMNS}`` row as a listing entry; ``as_time`` turns the backend's
    stored timestamps into aware UTC datetimes."""
    return DocumentInfo(
        id=row[0],
        source=row[1],
        url=row[2],
        title=row[3],
        content_hash=row[4],
        chunks=row[5],
        added_at=as_time(row[6]),
        updated_at=as_time(row[7]),
    )


class KBStats(TypedDict):
    backend: Literal["sqlite", "postgres"]
    documents: int
    chunks: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedDocument:
    """A file read and chunked, ready to be stored (what a backend's ``_store`` receives)."""

    source: str
    document_id: str
    url: str | None
    title: str
    content_hash: str
    chunks: tuple[Chunk, ...]

    def chunk_id(self, chunk: Chunk) -> str:
        return f"{self.document_id}#{chunk.ordinal}"

    def chunk_url(self, chunk: Chunk) -> str | None:
        if self.url is None or chunk.anchor is None:
            return self.url
        return f"{urldefrag(self.url).url}#{chunk.anchor}"


def source_of(path: Path) -> str:
    """The identity of a file in a knowledge base: its absolute, resolved path."""
    return str(path.expanduser().resolve())


def document_id_of(source: str) -> str:
    """The stable id of the document at ``source``."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def url_under(base_url: str, relative: str) -> str:
    """``base_url`` joined with a relative POSIX path (``base_url`` is taken as a directory)."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    return urljoin(base, quote(relative, safe="/"))


def _prepare(path: Path, url: str | None) -> PreparedDocument | AddResult:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    source = source_of(path)
    document_id = document_id_of(source)
    kind = document_kind(path)
    if kind is None:
        reason = f"unsupported file type {path.suffix or '(none)'!r}"
        return AddResult(
            source=source,
            document_id=document_id,
            title=None,
            chunks=0,
            status="skipped",
            reason=reason,
        )
    raw = Path(source).read_bytes()
    text = raw.decode("utf-8-sig", errors="replace")
    chunked = chunk_document(text, kind=kind, fallback_title=path.stem)
    return PreparedDocument(
        source=source,
        document_id=document_id,
        url=url if url is not None else Path(source).as_uri(),
        title=chunked.title,
        content_hash=hashlib.sha256(raw).hexdigest(),
        chunks=chunked.chunks,
    )


def _walk(root: Path) -> list[tuple[Path, str]]:
    """The supported files under ``root`` (hidden ones left out), with their paths relative
    to it, sorted by those."""
    found: list[tuple[Path, str]] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            candidate = Path(directory) / name
            if not name.startswith(".") and document_kind(candidate) is not None:
                found.append((candidate, candidate.relative_to(root).as_posix()))
    return sorted(found, key=lambda item: item[1])


class KnowledgeBase(ABC):
    """A searchable collection of documents (Markdown, HTML, plain text), chunked into passages.

    Adding a file again replaces its passages; when neither its content nor its URL changed,
    nothing is written and the result says ``unchanged``. Each document is written in one
    transaction: a search sees its old passages or its new ones, never a mix.
    """

    backend: Literal["sqlite", "postgres"]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def add_file(self, path: Path, *, url: str | None = None) -> AddResult:
        """Add (or refresh) one file; ``url`` is where readers find it (default: its
        ``file://`` URI). :class:`FileNotFoundError` if it does not exist."""
        prepared = await asyncio.to_thread(_prepare, path, url)
        if isinstance(prepared, AddResult):
            return prepared
        if not prepared.chunks:
            removed = await self.remove(prepared.source)
            reason = "no text" + (" (its previous version was removed)" if removed else "")
            return AddResult(
                source=prepared.source,
                document_id=prepared.document_id,
                title=prepared.title,
                chunks=0,
                status="skipped",
                reason=reason,
            )
        status = await self._store(prepared)
        return AddResult(
            source=prepared.source,
            document_id=prepared.document_id,
            title=prepared.title,
            chunks=len(prepared.chunks),
            status=status,
        )

    async def add_paths(
        self, paths: Sequence[Path], *, base_url: str | None = None
    ) -> list[AddResult]:
        """Add files, and the supported files under directories (recursively, sorted, hidden
        ones left out). With ``base_url``, a file's URL is ``base_url`` joined with its path
        relative to the directory given (a file given itself: its name).
        :class:`FileNotFoundError`, before anything is added, if a path does not exist."""
        for root in paths:
            if not root.exists():
                raise FileNotFoundError(f"no such file or directory: {root}")
        results: list[AddResult] = []
        for root in paths:
            if root.is_dir():
                files = await asyncio.to_thread(_walk, root)
            else:
                files = [(root, root.name)]
            for file, relative in files:
                url = url_under(base_url, relative) if base_url is not None else None
                results.append(await self.add_file(file, url=url))
        if any(result.status in ("added", "updated") for result in results):
            await self._after_bulk_change()
        return results

    async def _after_bulk_change(self) -> None:  # noqa: B027 - optional for a backend
        """Many chunks changed at once (``add_paths``): a backend may refresh its statistics."""

    @abstractmethod
    async def search(self, query: str, *, limit: int = DEFAULT_LIMIT) -> list[Passage]:
        """The passages that best match ``query`` (natural language; never a syntax error),
        best first; ``[]`` when it has no searchable words."""

    @abstractmethod
    async def remove(self, source: str | Path) -> bool:
        """Remove a document, named by its source path (as given or absolute), its id or its
        URL; False if there is none."""

    @abstractmethod
    async def documents(self) -> list[DocumentInfo]:
        """Every document, ordered by source."""

    @abstractmethod
    async def stats(self) -> KBStats: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    @abstractmethod
    async def _store(self, document: PreparedDocument) -> Literal["added", "updated", "unchanged"]:
        """Write ``document`` in one transaction, replacing an earlier version of its source
        (``unchanged``, writing nothing, when its content hash and URL are the same)."""


def removal_keys(source: str | Path) -> list[str]:
    """The values ``remove(source)`` matches against a document's source, id and URL."""
    given = str(source)
    keys = [given]
    try:
        resolved = source_of(Path(given))
    except (OSError, RuntimeError, ValueError):
        return keys
    if resolved != given:
        keys.append(resolved)
    return keys


__all__ = [
    "DEFAULT_LIMIT",
    "AddResult",
    "AddStatus",
    "DocumentInfo",
    "KBStats",
    "KnowledgeBase",
    "Passage",
    "PreparedDocument",
    "Retriever",
    "document_id_of",
    "removal_keys",
    "source_of",
    "url_under",
]
