"""Upstream failures: what each cause is called, whether to retry it, and what a client reads.

Sans-I/O and pure. An adapter classifies a vendor's failure (its HTTP status, the ``error.type``
or ``error.code`` of its body or of a streamed error) with :func:`classify`; the code names the
cause, :data:`FAILURES` says whether the same request may succeed later and gives the message
tokenwire writes for it. Clients only ever see that message: an upstream's own text can carry a
key hint ("Incorrect API key provided: sk-…abcd"), an internal host name or a proxy's HTML page,
so it goes to the server log only, through :func:`redact`.

=======================  ======================================================  =========
code                     when                                                    retryable
=======================  ======================================================  =========
upstream_auth            401/403, ``authentication_error``, ``permission_error``  no
upstream_quota           the account's quota or credit is used up (402, a 429     no
                         saying ``insufficient_quota``, ``billing_error``)
upstream_rate_limited    429, ``rate_limit_error`` (``retry_after`` when sent)    yes
upstream_overloaded      529, ``overloaded_error``                                yes
upstream_bad_request     400, 413, 422 and other 4xx, ``invalid_request_error``  no
upstream_not_found       404, ``not_found_error`` (a model or endpoint the        no
                         configuration names and the upstream does not have)
upstream_unavailable     500, 502, 503, 409, ``api_error``, connection refused    yes
upstream_timeout         408, 504, the upstream's own timeout                     yes
upstream_truncated       the stream ended without its end marker (the engine)     yes
upstream_invalid         the upstream broke its own stream format                 no
upstream_error           anything else                                            no
=======================  ======================================================  =========
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class FailureCode(StrEnum):
    """The cause of an upstream failure; the ``code`` of an ``error`` event it ends."""

    AUTH = "upstream_auth"
    QUOTA = "upstream_quota"
    RATE_LIMITED = "upstream_rate_limited"
    OVERLOADED = "upstream_overloaded"
    BAD_REQUEST = "upstream_bad_request"
    NOT_FOUND = "upstream_not_found"
    UNAVAILABLE = "upstream_unavailable"
    TIMEOUT = "upstream_timeout"
    TRUNCATED = "upstream_truncated"
    INVALID = "upstream_invalid"
    ERROR = "upstream_error"


@dataclass(frozen=True, slots=True)
class FailureKind:
    """What tokenwire says about one cause."""

    code: FailureCode
    retryable: bool
    """The same request may succeed if sent again later (after ``retry_after`` if given)."""
    message: str
    """Written by tokenwire, safe for any client: no upstream text in it."""


def _kinds(*kinds: FailureKind) -> dict[FailureCode, FailureKind]:
    return {kind.code: kind for kind in kinds}


FAILURES: Final[Mapping[FailureCode, FailureKind]] = _kinds(
    FailureKind(
        FailureCode.AUTH,
        False,
        "the upstream provider refused tokenwire's credentials; the server's configuration "
        "needs fixing",
    ),
    FailureKind(
        FailureCode.QUOTA,
        False,
        "the upstream provider's quota for this server is used up",
    ),
    FailureKind(
        FailureCode.RATE_LIMITED,
        True,
        "the upstream provider is rate limiting requests; try again later",
    ),
    FailureKind(
        FailureCode.OVERLOADED,
        True,
        "the upstream provider is overloaded; try again later",
    ),
    FailureKind(
        FailureCode.BAD_REQUEST,
        False,
        "the upstream provider refused the request as invalid (too long, or a parameter "
        "its model does not accept)",
    ),
    FailureKind(
        FailureCode.NOT_FOUND,
        False,
        "the upstream provider does not have the model or endpoint this route is configured for",
    ),
    FailureKind(
        FailureCode.UNAVAILABLE,
        True,
        "the upstream provider is unavailable; try again later",
    ),
    FailureKind(
        FailureCode.TIMEOUT,
        True,
        "the upstream provider timed out; try again later",
    ),
    FailureKind(
        FailureCode.TRUNCATED,
        True,
        "the upstream stream ended without its end marker",
    ),
    FailureKind(
        FailureCode.INVALID,
        False,
        "the upstream provider sent a malformed stream",
    ),
    FailureKind(
        FailureCode.ERROR,
        False,
        "the upstream provider failed",
    ),
)

_LEGACY_CODES: Final = {
    "auth": FailureCode.AUTH,
    "rate_limited": FailureCode.RATE_LIMITED,
    "overloaded": FailureCode.OVERLOADED,
    "bad_request": FailureCode.BAD_REQUEST,
    "server_error": FailureCode.UNAVAILABLE,
    "connect": FailureCode.UNAVAILABLE,
    "closed": FailureCode.UNAVAILABLE,
    "shutdown": FailureCode.UNAVAILABLE,
    "stream_error": FailureCode.INVALID,
    "model": FailureCode.ERROR,
}
"""The short words adapters used before the table (the local provider still raises them)."""


def failure_code(code: str) -> FailureCode:
    """``code`` as a :class:`FailureCode`: a table code, an older short word, else ``ERROR``."""
    try:
        return FailureCode(code)
    except ValueError:
        return _LEGACY_CODES.get(code, FailureCode.ERROR)


_VENDOR_TYPES: Final = {
    # Anthropic's error.type values, then OpenAI's (and compatible servers') type or code.
    "authentication_error": FailureCode.AUTH,
    "permission_error": FailureCode.AUTH,
    "billing_error": FailureCode.QUOTA,
    "rate_limit_error": FailureCode.RATE_LIMITED,
    "overloaded_error": FailureCode.OVERLOADED,
    "invalid_request_error": FailureCode.BAD_REQUEST,
    "request_too_large": FailureCode.BAD_REQUEST,
    "not_found_error": FailureCode.NOT_FOUND,
    "timeout_error": FailureCode.TIMEOUT,
    "invalid_api_key": FailureCode.AUTH,
    "insufficient_quota": FailureCode.QUOTA,
    "rate_limit_exceeded": FailureCode.RATE_LIMITED,
    "context_length_exceeded": FailureCode.BAD_REQUEST,
    "model_not_found": FailureCode.NOT_FOUND,
    "timeout": FailureCode.TIMEOUT,
    "service_unavailable": FailureCode.UNAVAILABLE,
    "overloaded": FailureCode.OVERLOADED,
}

_GENERIC_SERVER_TYPES: Final = frozenset({"api_error", "server_error", "internal_error"})
"""Types that only say "the server failed": the status decides, or, mid-stream, unavailable."""


def _for_status(status: int) -> FailureCode:
    if status in (401, 403):
        return FailureCode.AUTH
    if status == 402:  # Payment Required
        return FailureCode.QUOTA
    if status == 404:
        return FailureCode.NOT_FOUND
    if status == 429:
        return FailureCode.RATE_LIMITED
    if status in (408, 504):
        return FailureCode.TIMEOUT
    if status == 529:
        return FailureCode.OVERLOADED
    if status == 409 or status >= 500:
        return FailureCode.UNAVAILABLE
    if 400 <= status < 500:
        return FailureCode.BAD_REQUEST
    return FailureCode.ERROR  # a redirect or another status a streaming API never sends


def classify(status: int | None, *vendor_words: str | None) -> FailureCode:
    """The cause of a failure from its HTTP status (None: an error inside a stream) and the
    vendor's ``error.type`` / ``error.code`` words.

    The status decides a 4xx (an OpenAI 401 says ``invalid_request_error``, and is still an
    authentication failure), except that a 429 about quota is a quota failure; a 5xx or an
    error inside the stream is refined by a word that says more (``overloaded_error``).
    """
    typed = next(
        (_VENDOR_TYPES[word] for word in vendor_words if word and word in _VENDOR_TYPES), None
    )
    if status is None:
        if typed is not None:
            return typed
        generic = any(word in _GENERIC_SERVER_TYPES for word in vendor_words if word)
        return FailureCode.UNAVAILABLE if generic else FailureCode.ERROR
    by_status = _for_status(status)
    if by_status is FailureCode.RATE_LIMITED and typed is FailureCode.QUOTA:
        return typed
    if status >= 500 and typed in (
        FailureCode.OVERLOADED,
        FailureCode.RATE_LIMITED,
        FailureCode.TIMEOUT,
    ):
        return typed
    return by_status


REDACTED: Final = "[redacted]"

_SECRET_PATTERNS: Final = (
    # Vendor API keys: OpenAI sk-... / sk-proj-..., Anthropic sk-ant-..., also the masked
    # hints vendors echo back ("sk-…abcd", "sk-proj-****abcd").
    (re.compile(r"\bsk-[\w\-*.…]{2,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),  # AWS access key ids
    (re.compile(r"\bAIza[\w\-]{20,}"), REDACTED),  # Google API keys
    (re.compile(r"\b(?:ghp|gho|ghu|ghs|github_pat|xox[abprs]|hf)_[\w\-]{10,}"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[\w\-.~+/=*…]+"), r"\1 " + REDACTED),
    # Credentials in a URL: user:password@host, and secret-looking query parameters.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@"), r"\1" + REDACTED + "@"),
    (
        re.compile(
            r"(?i)([?&;](?:api[_-]?key|key|token|access[_-]?token|auth|signature|sig|secret"
            r"|password|client[_-]?secret)=)[^&\s#\"'<>]+"
        ),
        r"\1" + REDACTED,
    ),
    # "api_key": "...", x-api-key: ..., password=...
    (
        re.compile(
            r"(?i)\b((?:x-)?api[_-]?key|authorization|password|secret|access[_-]?token"
            r"|client[_-]?secret)([\"']?\s*[:=]\s*[\"']?)[^\s\"',;&<>]+"
        ),
        r"\1\2" + REDACTED,
    ),
    # Long opaque tokens: 32+ hex digits, or 40+ base64/url-safe characters with a digit.
    (re.compile(r"\b[0-9a-fA-F]{32,}\b"), REDACTED),
    (re.compile(r"(?<![\w/+=\-])(?=[\w+/=\-]*\d)[A-Za-z0-9+/_\-]{40,}={0,2}"), REDACTED),
)

_DETAIL_LIMIT: Final = 500


def redact(text: str, *, limit: int = _DETAIL_LIMIT) -> str:
    """``text`` with anything key-like replaced by ``[redacted]``, on one line, at most
    ``limit`` characters: fit for a log line, never for a client."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    # One line: an upstream's text must not forge log lines.
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
