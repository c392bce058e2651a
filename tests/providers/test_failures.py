"""The failure table and redaction: pure, no I/O."""

from __future__ import annotations

import pytest

from tokenwire.providers import FAILURES, FailureCode, ProviderError, redact
from tokenwire.providers.failures import classify


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Incorrect API key provided: sk-…abcd.", "sk-…abcd"),
        ("Incorrect API key provided: sk-proj-********************wxyz", "wxyz"),
        ("invalid x-api-key sk-ant-api03-Zq9vLmN0pQ", "Zq9vLmN0pQ"),
        ("Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl", "eyJhbGciOi"),
        ("GET https://proxy/v1/models?api_key=s3cr3t&x=1 failed", "s3cr3t"),
        ("GET https://user:hunter2@proxy/v1 failed", "hunter2"),
        ('{"api_key": "plainvalue"}', "plainvalue"),
        ("token 0123456789abcdef0123456789abcdef in the body", "0123456789abcdef"),
        ("opaque QWxhZGRpbjpvcGVuIHNlc2FtZQ0123456789abcdefXYZ== here", "QWxhZGRpbjpv"),
        ("AWS AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ],
)
def test_redact_replaces_anything_key_like(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted and "[redacted]" in redacted


def test_redact_keeps_ordinary_words_on_one_bounded_line() -> None:
    assert redact("the model is overloaded, try again") == "the model is overloaded, try again"
    assert redact("line one\nforged: log line") == "line one forged: log line"
    assert len(redact("x " * 1000)) == 500


@pytest.mark.parametrize(
    ("status", "words", "code"),
    [
        (401, ("invalid_request_error", "invalid_api_key"), FailureCode.AUTH),
        (429, ("insufficient_quota",), FailureCode.QUOTA),
        (429, (), FailureCode.RATE_LIMITED),
        (529, ("api_error",), FailureCode.OVERLOADED),
        (500, ("overloaded_error",), FailureCode.OVERLOADED),
        (502, (), FailureCode.UNAVAILABLE),
        (504, (), FailureCode.TIMEOUT),
        (413, ("request_too_large",), FailureCode.BAD_REQUEST),
        (None, ("overloaded_error",), FailureCode.OVERLOADED),
        (None, ("api_error",), FailureCode.UNAVAILABLE),
        (None, ("never_heard_of_it",), FailureCode.ERROR),
    ],
)
def test_classify(status: int | None, words: tuple[str, ...], code: FailureCode) -> None:
    assert classify(status, *words) is code


def test_a_provider_error_says_tokenwires_words_and_keeps_the_upstreams_redacted() -> None:
    error = ProviderError("Incorrect API key provided: sk-…abcd", code="upstream_auth")
    assert str(error) == error.message == FAILURES[FailureCode.AUTH].message
    assert error.detail == "Incorrect API key provided: [redacted]"
    assert error.retryable is False
    # The short words the local provider still uses read through the table.
    assert ProviderError("busy", code="overloaded").code is FailureCode.OVERLOADED
    assert ProviderError("gone", code="closed", retryable=False).retryable is False
