"""A loopback webhook receiver that records deliveries and misbehaves on demand.

Each POST consumes the next scripted :class:`Reply` (``push``/``fail_first``), or answers 200
when none is left. Every request is recorded in ``requests``; the ones answered 2xx are the
receiver's delivery log, ``accepted``, keyed by ``Idempotency-Key`` (a receiver that
deduplicates would store the first and ignore the rest). With a ``secret`` the receiver checks
the signature itself (its own HMAC code, not tokenwire's) and answers 401 when it is wrong.
Tests await what they need (``wait_requests``, ``hanging``), never sleep::

    async with WebhookReceiver(secret=b"s") as rx:
        rx.fail_first(2)
        ...  # POST to rx.url
        assert len(rx.accepted[key]) == 1
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import defaultdict
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class Reply:
    status: int = 200
    retry_after: str | None = None
    hang: bool = False
    """Never answer (until the receiver closes): the client has to time out."""


@dataclass(frozen=True)
class Received:
    key: str | None
    attempt: str | None
    body: bytes
    headers: dict[str, str]
    status: int | None
    signature_valid: bool | None


class WebhookReceiver:
    def __init__(self, *, secret: bytes | None = None) -> None:
        self.secret = secret
        self.requests: list[Received] = []
        self.accepted: defaultdict[str, list[Received]] = defaultdict(list)
        self._script: list[Reply] = []
        self._arrived = asyncio.Condition()
        self._release = asyncio.Event()
        self.hanging = asyncio.Event()
        """Set when a request is being held by a ``hang`` reply."""
        self._runner: web.AppRunner | None = None
        self.url = ""

    def push(self, *replies: Reply) -> None:
        self._script.extend(replies)

    def fail_first(self, n: int, status: int = 500) -> None:
        self.push(*[Reply(status=status)] * n)

    async def wait_requests(self, n: int) -> None:
        """Return once at least ``n`` requests have arrived."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= n)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = self._script.pop(0) if self._script else Reply()
        valid = self._check_signature(request, body)
        status: int | None = reply.status
        if reply.hang:
            status = None
        elif valid is False:
            status = 401
        received = Received(
            key=request.headers.get("Idempotency-Key"),
            attempt=request.headers.get("X-Tokenwire-Attempt"),
            body=body,
            headers=dict(request.headers),
            status=status,
            signature_valid=valid,
        )
        self.requests.append(received)
        if status is not None and 200 <= status < 300 and received.key is not None:
            self.accepted[received.key].append(received)
        async with self._arrived:
            self._arrived.notify_all()
        if reply.hang:
            self.hanging.set()
            await self._release.wait()
            return web.Response(status=503)
        assert status is not None
        headers = {"Retry-After": reply.retry_after} if reply.retry_after else {}
        return web.Response(status=status, headers=headers, text="ok")

    def _check_signature(self, request: web.Request, body: bytes) -> bool | None:
        if self.secret is None:
            return None
        timestamp = request.headers.get("X-Tokenwire-Timestamp", "")
        given = request.headers.get("X-Tokenwire-Signature", "")
        expected = hmac.new(self.secret, f"{timestamp}.".encode() + body, hashlib.sha256)
        return hmac.compare_digest(given, "sha256=" + expected.hexdigest())

    async def __aenter__(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._release.set()
        assert self._runner is not None
        await self._runner.cleanup()
