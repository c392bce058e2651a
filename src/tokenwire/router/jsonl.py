"""The JSONL file sink: one line per delivered record, appended.

Each line is a JSON object::

    {"idempotency_key": "<stream_id>:<route>", "delivered_at": <unix seconds>, "record": {...}}

A line is written with one ``write`` on a file opened with ``O_APPEND`` while holding a lock,
so lines from concurrent deliveries (and from other processes appending to the same file)
never interleave. The file is opened for each line, so a log rotated away is simply recreated.
At-least-once: a record re-delivered (by an outbox, say) appears again with the same key.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from .sinks import AttemptCallback


class JsonlSink:
    """Appends records to ``path`` (its directory is created when missing)."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        # A thread lock, not an asyncio one: the write runs in a worker thread.
        self._lock = threading.Lock()

    async def deliver(
        self,
        record: Mapping[str, Any],
        key: str,
        *,
        on_attempt: AttemptCallback | None = None,
    ) -> None:
        """Append one line for ``record``; raises ``OSError`` when the file cannot be written."""
        if on_attempt is not None:
            on_attempt(1)
        line = orjson.dumps(
            {"idempotency_key": key, "delivered_at": time.time(), "record": record},
            option=orjson.OPT_APPEND_NEWLINE,
        )
        # File I/O blocks; a slow disk must not stall the event loop that streams text.
        await asyncio.to_thread(self._append, line)

    def _append(self, line: bytes) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(line)
                while view:  # a regular file takes it in one write; loop for the odd short one
                    written = os.write(fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)

    async def aclose(self) -> None:
        """Nothing to release (the file is opened per line); present for the sink contract."""

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r})"
