from __future__ import annotations

import hashlib

from tokenwire.output import answer_hash


def test_answer_hash_is_sha256_of_the_exact_utf8_text() -> None:
    assert answer_hash("Paris é") == "sha256:" + hashlib.sha256("Paris é".encode()).hexdigest()
    assert (
        answer_hash("") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert answer_hash("a") != answer_hash("a ")
