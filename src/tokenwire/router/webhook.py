"""The webhook sink: POST the turn record as JSON, signed, retried, with an idempotency key.

Each attempt sends the same body bytes with these headers::

    Content-Type: application/json
    Idempotency-Key: <stream_id>:<route>          the same on every attempt: deduplicate on it
    X-Tokenwire-Timestamp: <unix seconds>         when this attempt was signed
    X-Tokenwire-Signature: sha256=<hex>           HMAC-SHA256(secret, "<timestamp>." + body)
    X-Tokenwire-Attempt: <n>

The timestamp is inside the signed bytes so a captured request cannot be replayed later with a
fresh timestamp; receivers check both with :func:`verify_signature`. Without a secret the two
signature headers are omitted.

Retried (exponential backoff with jitter, at most ``max_attempts`` in all): connection errors,
timeouts, 5xx, 408 and 429. A ``Retry-After`` is honoured, capped at ``retry_after_max_s``.
Any other status below 200 or from 300 up is final: :class:`DeliveryError` with
``retryable=False``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from ..protocol.retry import backoff_delay
from ..protocol.retry import retry_after_seconds as parse_retry_after
from .sinks import AttemptCallback, DeliveryError

SIGNATURE_HEADER = "X-Tokenwire-Signature"
TIMESTAMP_HEADER = "X-Tokenwire-Timestamp"
ATTEMPT_HEADER = "X-Tokenwire-Attempt"
IDEMPOTENCY_HEADER = "Idempotency-Key"

_RETRY_STATUSES = frozenset({408, 429})
# Transport failures where the request may not have arrived, or its answer got lost: both are
# safe to retry because the receiver deduplicates by the idempotency key.
_RETRY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``: ``sha256=<hex>``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: bytes,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """True when ``signature`` signs ``body`` at ``timestamp`` with ``secret`` and the timestamp
    is within ``tolerance_s`` of ``now`` (default: the current time). For receivers."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookSink:
    """Delivers records to one URL. Reuses one HTTP client; call :meth:`aclose` when done."""

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 60.0,
        request_timeout_s: float = 10.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = url
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self._headers = dict(headers or {})
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(request_timeout_s), follow_redirects=False
        )

    async def deliver(
        self,
        record: Mapping[str, Any],
        key: str,
        *,
        on_attempt: AttemptCallback | None = None,
    ) -> None:
        """POST ``record`` until a 2xx, a final refusal, or ``max_attempts`` (see the module)."""
        body = orjson.dumps(record)
        for attempt in range(1, self.max_attempts + 1):
            if on_attempt is not None:
                on_attempt(attempt)
            retry_after: float | None = None
            try:
                response = await self._client.post(
                    self.url, content=body, headers=self._attempt_headers(body, key, attempt)
                )
            except _RETRY_ERRORS as exc:
                failure = f"{type(exc).__name__}: {exc}".rstrip(": ")
                status: int | None = None
            except httpx.HTTPError as exc:
                raise DeliveryError(
                    f"webhook request failed: {type(exc).__name__}: {exc}",
                    attempts=attempt,
                    retryable=False,
                ) from exc
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return
                failure = f"HTTP {status}"
                if status < 500 and status not in _RETRY_STATUSES:
                    raise DeliveryError(
                        f"webhook refused the delivery: {failure}",
                        attempts=attempt,
                        retryable=False,
                        status=status,
                    )
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            if attempt == self.max_attempts:
                raise DeliveryError(
                    f"webhook failed after {attempt} attempts: {failure}",
                    attempts=attempt,
                    retryable=True,
                    status=status,
                )
            await asyncio.sleep(self._delay(attempt, retry_after))
        raise AssertionError("unreachable: the loop returns or raises")

    def _attempt_headers(self, body: bytes, key: str, attempt: int) -> dict[str, str]:
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: key,
            ATTEMPT_HEADER: str(attempt),
        }
        if self._secret is not None:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        return headers

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before attempt ``attempt + 1``: exponential, jittered to its upper half so
        that many failed deliveries do not come back in lockstep; at least the receiver's
        ``Retry-After`` (capped, so one header cannot park a delivery for hours)."""
        return backoff_delay(
            attempt,
            initial_s=self.backoff_initial_s,
            max_s=self.backoff_max_s,
            retry_after=retry_after,
            retry_after_max_s=self.retry_after_max_s,
        )

    async def aclose(self) -> None:
        """Close the HTTP client. A delivery in progress fails; the sink is unusable after."""
        await self._client.aclose()

    async def __aenter__(self) -> WebhookSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"WebhookSink({self.url!r})"
