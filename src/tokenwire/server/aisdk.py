"""The Vercel AI SDK UI message stream endpoint (``useChat`` frontends).

``POST /v1/ai-sdk/chat`` takes the body ``useChat``'s ``DefaultChatTransport`` sends
(:mod:`.aisdk_request`) and answers one turn as the SDK's UI message stream (header
``x-vercel-ai-ui-message-stream: v1``; chunks from :mod:`.aisdk_parts`), so a frontend
written for an AI SDK route works unchanged with ``api`` pointed here.

``GET /v1/ai-sdk/chat/{chat_id}/stream`` is the transport's ``reconnectToStream`` (``useChat``
with ``resume: true``): the chat's latest turn, replayed from its start and followed live, as a
viewer, while it runs; 204 when it has none running (what the SDK expects).

The stream is tokenwire's own :class:`~.sse.EventStreamResponse` with each write transcoded:
the log cursor, heartbeats, the slow-reader limits and the originator's ``on_disconnect``
policy (closing the connection stops the turn, reason ``client_gone``) are the same code as
``POST /v1/streams``'.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..auth import Authenticator
from ..bus import UnknownStream
from ..engine import Engine, TurnHandle
from .access import STREAM_TOKEN_HEADER, principal
from .aisdk_parts import UI_MESSAGE_STREAM_HEADER, UIMessageTranscoder, UIMessageTranslator
from .aisdk_request import chat_turn
from .body import read_json_object
from .sse import EventStreamResponse

CHAT_PATH = "/v1/ai-sdk/chat"


class UIMessageStreamResponse(Response):
    """One turn as the AI SDK's UI message stream: ``events`` (tokenwire's SSE response of the
    turn) with every body it writes transcoded, so following the log, heartbeats, send timeouts
    and the disconnect policy stay in one place. A non-200 answer (a resume the log no longer
    covers) passes through untouched."""

    def __init__(self, events: EventStreamResponse, translator: UIMessageTranslator) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.events = events
        self._translator = translator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transcoder = UIMessageTranscoder(self._translator)
        streaming = False

        async def send_transcoded(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start":
                streaming = message["status"] == 200
            elif streaming and message["type"] == "http.response.body":
                body = transcoder.feed(message.get("body", b""))
                more = message.get("more_body", False)
                if not body and more:
                    return  # events with no chunk (status, usage): nothing to write
                message = {"type": "http.response.body", "body": body, "more_body": more}
            await send(message)

        await self.events(scope, receive, send_transcoded)


def aisdk_routes(engine: Engine, auth: Authenticator) -> APIRouter:
    """The AI SDK endpoint, ready for ``include_router``."""
    router = APIRouter()

    def latest_key(tenant: str | None, chat_id: str) -> str:
        # (tenant, chat id) → the chat's latest stream and its message id, for reconnects:
        # kept by the engine as long as the streams it points at (across gateways in
        # scale-out mode).
        return "aisdk:" + orjson.dumps([tenant, chat_id]).decode()

    @router.post(CHAT_PATH, response_model=None)
    async def chat(request: Request) -> Response:
        who = principal(auth, request)
        body = await read_json_object(request, engine.settings.limits.max_body_bytes)
        turn = chat_turn(body)
        handle = await engine.submit(turn.request, tenant=who.tenant)
        if turn.chat_id is not None:
            pointer = orjson.dumps([handle.stream_id, turn.message_id]).decode()
            await engine.remember(latest_key(who.tenant, turn.chat_id), pointer)
        token = auth.issue_token(who, handle.stream_id)
        headers = {STREAM_TOKEN_HEADER: token} if token is not None else {}
        return ui_message_stream(
            engine, handle, message_id=turn.message_id, originator=True, headers=headers
        )

    @router.get(CHAT_PATH + "/{chat_id}/stream", response_model=None)
    async def reconnect(chat_id: str, request: Request) -> Response:
        tenant = principal(auth, request).tenant
        found = await engine.recall(latest_key(tenant, chat_id))
        if found is None:
            return Response(status_code=204)
        stream_id, message_id = orjson.loads(found)
        try:
            handle = await engine.lookup(stream_id, tenant=tenant)
        except UnknownStream:
            return Response(status_code=204)
        if handle.done:
            return Response(status_code=204)
        return ui_message_stream(engine, handle, message_id=message_id, originator=False)

    return router


def ui_message_stream(
    engine: Engine,
    handle: TurnHandle,
    *,
    message_id: str | None,
    originator: bool,
    headers: dict[str, str] | None = None,
) -> UIMessageStreamResponse:
    """The turn of ``handle`` from its first event, as a UI message stream. ``originator``:
    this client started the turn, so its leaving applies the turn's ``on_disconnect``."""
    settings = engine.settings
    events = EventStreamResponse(
        handle,
        metrics=engine.metrics,
        heartbeat_s=settings.server.heartbeat_s,
        send_timeout_s=settings.limits.slow_client_send_timeout_s,
        max_lag_events=settings.limits.slow_client_lag_events,
        after_seq=0,
        originator=originator,
        extra_headers={UI_MESSAGE_STREAM_HEADER: "v1", **(headers or {})},
    )
    return UIMessageStreamResponse(events, UIMessageTranslator(message_id=message_id))
