"""Post-processing: the canonical answer is the streamed text after cleanup.

Applications persist and route the canonical answer (``done.answer``), never the concatenated
deltas: what streamed may carry artifacts a reader tolerates but a database should not keep.
"""

from __future__ import annotations

import re

_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


def canonical_answer(streamed: str) -> str:
    """Normalise line endings, drop trailing spaces and runs of blank lines, trim the ends."""
    text = streamed.replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING_SPACE.sub("\n", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()
