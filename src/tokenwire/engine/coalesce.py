"""Token coalescing: the first delta goes out at once, later ones merge in short windows.

A model can emit hundreds of tokens per second; sending each as its own event floods a browser
with tiny events and re-renders. After each emission a window opens; text arriving inside it
waits and leaves as one delta when the window closes (the caller arms a timer at
:attr:`Coalescer.due_at`) or when ``max_chars`` accumulate.
"""

from __future__ import annotations


class Coalescer:
    __slots__ = ("_max_chars", "_next_at", "_pending", "_pending_chars", "_window")

    def __init__(self, window_s: float, max_chars: int) -> None:
        self._window = window_s
        self._max_chars = max_chars
        self._pending: list[str] = []
        self._pending_chars = 0
        self._next_at = float("-inf")

    @property
    def due_at(self) -> float | None:
        """When pending text must leave (loop time), or None when nothing waits."""
        return self._next_at if self._pending else None

    def push(self, text: str, now: float) -> str | None:
        """Offer text; returns what to emit now, or None if it waits for the window to close."""
        if not self._pending and now >= self._next_at:
            self._next_at = now + self._window
            return text
        self._pending.append(text)
        self._pending_chars += len(text)
        if now >= self._next_at or self._pending_chars >= self._max_chars:
            return self.flush(now)
        return None

    def flush(self, now: float) -> str | None:
        """Take everything pending (None if nothing) and open a new window."""
        if not self._pending:
            return None
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        self._next_at = now + self._window
        return text
