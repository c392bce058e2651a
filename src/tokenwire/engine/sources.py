"""The sources of one turn's answer: collected in the order they arrive, de-duplicated.

``done.sources`` lists each source's key (its URL, else its id) once, first report first;
``done.source_details`` has one object per key with what is known of it (``url``/``id``,
``title``, ``snippet``, ``origin``). A later report of the same source fills in details the
first lacked, never overwrites them.
"""

from __future__ import annotations

from typing import Any

from ..providers import SourceChunk

_DETAILS = ("url", "id", "title", "snippet", "origin")


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

    def clear(self) -> None:
        """Forget an attempt's sources (a retry or fallback answers anew)."""
        self._by_key.clear()

    @property
    def keys(self) -> list[str]:
        return list(self._by_key)

    @property
    def details(self) -> list[dict[str, Any]]:
        return [dict(detail) for detail in self._by_key.values()]
