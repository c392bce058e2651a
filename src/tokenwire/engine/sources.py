"""The sources of one turn's answer: collected in the order they arrive, de-duplicated.

``done.sources`` lists each source's key (its URL, else its id) once, first report first;
``done.source_details`` has one object per key with what is known of it (``url``/``id``,
``title``, ``snippet``, ``origin``, and ``cited: true`` for a passage the answer cites). A
later report of the same source fills in details the first lacked, never overwrites them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..providers import SourceChunk

_DETAILS = ("url", "id", "title", "snippet", "origin", "cited")


class SourceCollector:
    """The sources reported during one provider attempt."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[str, Any]] = {}

    def add(self, chunk: SourceChunk) -> None:
        key = chunk.url or chunk.id
        if not key:
            return  # a source without a name cannot be cited or de-duplicated
        detail = self._by_key.setdefault(key, {})
        for name in _DETAILS:
            value = getattr(chunk, name)
            if value and name not in detail:
                detail[name] = value

    def extend(self, chunks: Iterable[SourceChunk]) -> None:
        for chunk in chunks:
            self.add(chunk)

    def __len__(self) -> int:
        return len(self._by_key)

    def clear(self) -> None:
        """Forget an attempt's sources (a retry or fallback answers anew)."""
        self._by_key.clear()

    @property
    def keys(self) -> list[str]:
        return list(self._by_key)

    @property
    def details(self) -> list[dict[str, Any]]:
        return [dict(detail) for detail in self._by_key.values()]


_URL = re.compile(r"https?://[^\s<>()\[\]{}\"'`]+")
_URL_TAIL = ".,;:!?*_~"


def urls_in_text(text: str) -> list[SourceChunk]:
    """The last resort: the http(s) URLs an answer mentions, in order (trailing punctuation
    and a markdown link's closing parenthesis are not part of them)."""
    return [
        SourceChunk(url=match.group(0).rstrip(_URL_TAIL), origin="text")
        for match in _URL.finditer(text)
    ]


def structured_sources(data: Any, *, origin: str) -> list[SourceChunk]:
    """Sources in a structured payload (an extraction's data, a tool's result): a ``sources``
    (or ``citations``) list of URL strings or objects with ``url``/``id``/``title``/``snippet``;
    an object that has a ``url`` itself; or a list of such objects (a search result)."""
    found: list[SourceChunk] = []
    if isinstance(data, dict):
        listed = data.get("sources", data.get("citations"))
        if isinstance(listed, list):
            for item in listed:
                found.extend(_one_source(item, origin))
        found.extend(_one_source(data, origin) if "url" in data else ())
        for value in data.values():
            if isinstance(value, list) and value is not listed:
                for item in value:
                    if isinstance(item, dict) and "url" in item:
                        found.extend(_one_source(item, origin))
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and ("url" in item or "id" in item):
                found.extend(_one_source(item, origin))
    return found


def _one_source(item: Any, origin: str) -> list[SourceChunk]:
    if isinstance(item, str):
        return [SourceChunk(url=item, origin=origin)] if item.strip() else []
    if not isinstance(item, dict):
        return []
    url = item.get("url")
    ident = item.get("id")
    if not isinstance(url, str) and not isinstance(ident, str):
        return []
    title = item.get("title")
    snippet = item.get("snippet", item.get("text"))
    return [
        SourceChunk(
            url=url if isinstance(url, str) and url else None,
            id=ident if isinstance(ident, str) and ident else None,
            title=title if isinstance(title, str) else None,
            snippet=snippet[:280] if isinstance(snippet, str) else None,
            origin=origin,
        )
    ]
