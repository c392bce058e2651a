"""The fingerprint a structured result records of the text it was extracted from."""

from __future__ import annotations

import hashlib


def answer_hash(text: str) -> str:
    """``"sha256:<64 hex digits>"`` of the UTF-8 bytes of ``text``, exactly as given.

    Stable across processes and versions. Pass the canonical answer (``done.answer``): anyone
    holding the answer and the result can check they belong together by hashing it again. No
    normalisation happens here, so a single changed character changes the hash.
    """
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
