"""What every client shares: where the server is, how to authenticate, the timeouts, and the
request body of a turn (``POST /v1/streams``, WebSocket ``generate``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import httpx

from .. import __version__

DEFAULT_BASE_URL = "http://127.0.0.1:8000"

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=60.0)
"""Seconds. ``read`` bounds the silence on a stream: the server sends a heartbeat every
``server.heartbeat_s`` (15 s by default), so a stream quiet for longer lost its connection and
is resumed."""

CANCEL_ON_CLOSE_TIMEOUT = httpx.Timeout(5.0)
"""A stream closed before its end cancels its turn, best effort: waiting this long at most."""

USER_AGENT = f"tokenwire-python/{__version__}"


class TurnParams(TypedDict, total=False):
    """The fields of a turn request besides ``prompt`` (see the README, "Request body")."""

    messages: Sequence[Mapping[str, str]]
    """The conversation (``{"role", "content"}``); give this or ``prompt``."""
    route: str
    max_tokens: int
    temperature: float
    stop: Sequence[str]
    conversation_id: str
    metadata: Mapping[str, Any]
    extraction: Mapping[str, Any]
    """Structured output: ``{"schema": ..., "strategy": ...}``."""
    deadlines: Mapping[str, float]
    """``first_token_s``, ``idle_s``, ``total_s``; may only tighten the server's."""
    on_disconnect: Literal["cancel", "continue"]
    """The client's default is ``continue``, unlike the server's: see :func:`turn_body`."""
    background: bool
    script: Mapping[str, Any]
    """For the server's ``scripted`` provider: tokens, delays and faults."""
    extra_body: Mapping[str, Any]
    """Fields this client does not know yet, sent as they are."""


def turn_body(prompt: str | None, params: TurnParams) -> dict[str, Any]:
    """The JSON body of a turn.

    ``on_disconnect`` defaults to ``"continue"``: the connection that starts a turn is its
    *originator*, and with the server's default (``cancel``) a dropped originator stops the
    turn at once (``client_gone``), leaving nothing to resume. With ``continue`` the turn keeps
    running for the server's ``limits.disconnect_grace_s`` while the client reconnects as a
    reader (``GET /v1/streams/{id}/events``). Abandoning a stream on purpose (closing it before
    its terminal event) still stops the turn: the client sends ``cancel`` then.
    """
    body: dict[str, Any] = {} if prompt is None else {"prompt": prompt}
    for key, value in params.items():
        if key != "extra_body":
            body[key] = _plain(value)
    body.setdefault("on_disconnect", "continue")
    body.update(params.get("extra_body") or {})
    return body


def _plain(value: object) -> object:
    """Mappings and sequences as the dicts and lists the JSON encoder takes."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """The connection settings a client and its streams and sockets share."""

    base_url: str
    """Without a trailing slash; may carry a path (a server mounted under ``/llm``)."""
    api_key: str | None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        base_url: str | httpx.URL | None,
        api_key: str | None,
        headers: Mapping[str, str] | None,
    ) -> ClientOptions:
        """``base_url`` defaults to ``$TOKENWIRE_BASE_URL``, then ``http://127.0.0.1:8000``;
        ``api_key`` to ``$TOKENWIRE_API_KEY`` (none: requests go unauthenticated)."""
        url = str(base_url or os.environ.get("TOKENWIRE_BASE_URL") or DEFAULT_BASE_URL)
        key = api_key if api_key is not None else os.environ.get("TOKENWIRE_API_KEY") or None
        return cls(url.rstrip("/"), key, dict(headers or {}))

    def url(self, path: str) -> str:
        return self.base_url + path

    def ws_url(self, path: str) -> str:
        url = self.url(path)
        if url.startswith("https://"):
            return "wss://" + url[len("https://") :]
        if url.startswith("http://"):
            return "ws://" + url[len("http://") :]
        return url

    def request_headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every request's headers: the user agent, the API key as a bearer token, then the
        client's own headers and the call's (later ones win)."""
        headers = {"User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(self.headers)
        if extra:
            headers.update(extra)
        return headers
