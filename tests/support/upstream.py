"""A loopback fake upstream that speaks OpenAI and Anthropic streaming, and misbehaves on demand.

Routes (one server serves both dialects)::

    POST /v1/chat/completions   OpenAI chat-completions streaming (``data: {...}`` ... ``[DONE]``)
    POST /v1/messages           Anthropic messages streaming (named events ... ``message_stop``)
    GET  /v1/models             a model list (both vendors' shapes at once)

Each request consumes the next queued :class:`Behavior` (``push``), or the default one when the
queue is empty. Everything received is recorded (``requests``), and a test can *await* that a
client went away in the middle of a stream (``wait_client_disconnect``): the handler is cancelled
when its connection is lost, or its next write fails, and either counts. No sleeps needed::

    async with FakeUpstream() as up:
        up.push(Behavior(tokens=["a", "b"], hang_after=1))
        ...  # point a provider at up.openai_base_url or up.anthropic_base_url
        await up.wait_client_disconnect()

A streaming response counts its *content frames*: one per text token, one per tool-call start
and one per tool-call argument piece. Faults with an ``_after=k`` parameter fire before content
frame ``k`` (0 = right after the headers and the preamble; ``len(frames)`` = after all content,
before the finish / usage / end marker).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

HEARTBEAT = b": keep-alive\n\n"


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A tool call the fake model makes; ``arguments`` is its JSON split into streamed pieces."""

    name: str
    arguments: Sequence[str] = ()
    call_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Behavior:
    """What the fake upstream does for one request. The defaults: a short, well-formed stream."""

    tokens: Sequence[str] = ("Hello", ",", " world", "!")
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: str | None = None
    """The vendor's own word (``stop``/``length``/``tool_calls``; ``end_turn``/``max_tokens``/
    ``tool_use``/``refusal``). None: the natural one (tool calls if any, else a normal stop)."""
    interleave_tool_calls: bool = False
    """OpenAI: stream the tool calls' deltas round-robin (call 0's start, call 1's start, call 0's
    first argument piece, call 1's first, ...), as parallel calls may arrive; Anthropic streams
    one content block after another regardless."""
    usage: bool = True
    """OpenAI: send the usage chunk (``stream_options.include_usage``). Anthropic always does."""
    input_tokens: int = 5
    output_tokens: int | None = None
    """None: the number of tokens."""
    status: int = 200
    """Non-2xx: answer with the vendor's JSON error body instead of a stream."""
    error_type: str | None = None
    """``error.type`` of a status error or a mid-stream error (None: a fitting default)."""
    error_message: str = "fake upstream error"
    retry_after: str | None = None
    """``Retry-After`` header value, sent with a non-2xx status."""
    raw_body: str | None = None
    """With a non-2xx status: this body (``text/html``) instead of the vendor's JSON error, as
    a proxy in front of the upstream answers."""
    headers_delay_s: float = 0.0
    """Pause before sending the response headers."""
    hang_before_headers: bool = False
    """Never send headers; wait until the client leaves."""
    delay_s: float = 0.0
    """Pause before each content frame."""
    heartbeat: bool = False
    """Send ``: keep-alive`` comment lines after the headers and before each content frame."""
    cut_after: int | None = None
    """Drop the connection (no terminating chunk) before content frame k."""
    no_end_marker: bool = False
    """Send everything, finish and usage included, then end the body cleanly without the end
    marker (``[DONE]`` / ``message_stop``)."""
    hang_after: int | None = None
    """Stop sending before content frame k and keep the connection open until the client leaves."""
    error_event_after: int | None = None
    """Send the vendor's mid-stream error (a ``data: {"error": ...}`` object / an ``event:
    error``) before content frame k, then end the body."""
    malformed_after: int | None = None
    """Send a ``data:`` line that is not JSON before content frame k, then end the body."""

    def __post_init__(self) -> None:
        faults = [self.cut_after, self.hang_after, self.error_event_after, self.malformed_after]
        if sum(f is not None for f in faults) > 1:
            raise ValueError(
                "at most one of cut_after, hang_after, error_event_after, malformed_after"
            )


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake upstream received it. Header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    peer: tuple[str, int] | None
    """The client's address and port: requests from one pooled connection share it."""


@dataclass(frozen=True)
class _Frames:
    preamble: list[bytes]
    content: list[bytes]
    epilogue: list[bytes]
    end_marker: bytes
    error: bytes
    malformed: bytes


class FakeUpstream:
    """The server; use as ``async with FakeUpstream() as up``. See the module docstring."""

    def __init__(self, default: Behavior | None = None) -> None:
        self.default = default or Behavior()
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        """Streaming responses whose client went away before the response was complete."""
        self.completed = 0
        """Streaming responses sent to the end (a cut or a hang is not complete)."""
        self._queue: deque[Behavior] = deque()
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_get("/v1/models", self._models)
        # handler_cancellation: a lost connection cancels the handler, which is how a hanging
        # stream learns that its client left.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self._closing.set()  # release hanging handlers so shutdown does not wait for them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What an OpenAI client takes as ``base_url`` (ends in ``/v1``)."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What the Anthropic SDK takes as ``base_url`` (it adds ``/v1/messages`` itself)."""
        return self.base_url

    # -- the test's side -------------------------------------------------------------------

    def push(self, *behaviors: Behavior) -> None:
        """Queue behaviours; each request takes the next one (the default when none is left)."""
        self._queue.extend(behaviors)

    async def wait_client_disconnect(self, count: int = 1) -> None:
        """Return once ``count`` streaming responses in total lost their client mid-stream."""
        await self._wait_for(lambda: self.disconnects >= count)

    async def wait_requests(self, count: int = 1) -> RecordedRequest:
        """Return the ``count``-th request (1-based) once it has arrived."""
        await self._wait_for(lambda: len(self.requests) >= count)
        return self.requests[count - 1]

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _note(self, change: Callable[[], None]) -> None:
        async with self._changed:
            change()
            self._changed.notify_all()

    # -- handlers --------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Behavior:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw
        peer = request.transport.get_extra_info("peername") if request.transport else None
        headers = {k.lower(): v for k, v in request.headers.items()}
        recorded = RecordedRequest(
            request.method, request.path, headers, body, tuple(peer) if peer else None
        )
        await self._note(lambda: self.requests.append(recorded))
        return self._queue.popleft() if self._queue else self.default

    async def _models(self, request: web.Request) -> web.StreamResponse:
        behavior = await self._record(request)
        if behavior.status >= 300:
            return _error_response(behavior, anthropic="anthropic-version" in request.headers)
        model = {"id": "fake-model", "object": "model", "type": "model", "display_name": "Fake"}
        return web.json_response(
            {
                "object": "list",
                "data": [model],
                "has_more": False,
                "first_id": "fake-model",
                "last_id": "fake-model",
            }
        )

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        behavior = await self._record(request)
        return await self._stream(request, behavior, _openai_frames, anthropic=False)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        behavior = await self._record(request)
        return await self._stream(request, behavior, _anthropic_frames, anthropic=True)

    async def _stream(
        self,
        request: web.Request,
        b: Behavior,
        make_frames: Callable[[Behavior], _Frames],
        *,
        anthropic: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            if b.hang_before_headers:
                await self._closing.wait()
                return response
            if b.headers_delay_s:
                await asyncio.sleep(b.headers_delay_s)
            if b.status >= 300:
                return _error_response(b, anthropic=anthropic)
            frames = make_frames(b)
            await response.prepare(request)
            for frame in frames.preamble:
                await response.write(frame)
            for k in range(len(frames.content) + 1):
                if await self._fault(request, response, b, frames, k):
                    return response
                if k == len(frames.content):
                    break
                if b.heartbeat:
                    await response.write(HEARTBEAT)
                if b.delay_s:
                    await asyncio.sleep(b.delay_s)
                await response.write(frames.content[k])
            for frame in frames.epilogue:
                await response.write(frame)
            if not b.no_end_marker:
                await response.write(frames.end_marker)
            await response.write_eof()
            await self._note(lambda: setattr(self, "completed", self.completed + 1))
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            # The client went away (the handler is cancelled on connection loss, or a write
            # failed); a shutdown of the fake itself is not a client leaving.
            if not self._closing.is_set():
                await asyncio.shield(self._note(self._count_disconnect))
            raise

    def _count_disconnect(self) -> None:
        self.disconnects += 1

    async def _fault(
        self, request: web.Request, response: web.StreamResponse, b: Behavior, f: _Frames, k: int
    ) -> bool:
        """Apply the fault that fires before content frame ``k``; True if the stream is over."""
        if b.cut_after == k:
            assert request.transport is not None
            request.transport.abort()
            return True
        if b.hang_after == k:
            await self._closing.wait()
            return True
        if b.error_event_after == k:
            await response.write(f.error)
            await response.write_eof()
            return True
        if b.malformed_after == k:
            await response.write(f.malformed)
            await response.write_eof()
            return True
        return False


def _error_response(b: Behavior, *, anthropic: bool) -> web.Response:
    if b.raw_body is not None:
        return web.Response(text=b.raw_body, status=b.status, content_type="text/html")
    default_type = {429: "rate_limit_error", 401: "authentication_error"}.get(
        b.status, "api_error" if b.status >= 500 else "invalid_request_error"
    )
    error = {"type": b.error_type or default_type, "message": b.error_message}
    body = {"type": "error", "error": error} if anthropic else {"error": {**error, "code": None}}
    headers = {"Retry-After": b.retry_after} if b.retry_after is not None else None
    return web.json_response(body, status=b.status, headers=headers)


def _data(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _event(name: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\n" + _data(obj)


def _openai_frames(b: Behavior) -> _Frames:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _data(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "fake-model",
                "choices": [choice],
            }
        )

    content = [chunk({"content": token}) for token in b.tokens]
    # OpenAI's shape: a call's first delta has its index, id, type and name with empty
    # arguments; the later ones only the index and a piece of the arguments.
    per_call: list[list[bytes]] = []
    for index, call in enumerate(b.tool_calls):
        call_id = call.call_id or f"call_{index}"
        function = {"name": call.name, "arguments": ""}
        first = {"index": index, "id": call_id, "type": "function", "function": function}
        frames = [chunk({"tool_calls": [first]})]
        for piece in call.arguments:
            frames.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            )
        per_call.append(frames)
    if b.interleave_tool_calls:
        for k in range(max((len(f) for f in per_call), default=0)):
            content.extend(frames[k] for frames in per_call if k < len(frames))
    else:
        content.extend(frame for frames in per_call for frame in frames)
    finish = b.finish_reason or ("tool_calls" if b.tool_calls else "stop")
    epilogue = [chunk({}, finish)]
    if b.usage:
        output = len(b.tokens) if b.output_tokens is None else b.output_tokens
        usage = {
            "prompt_tokens": b.input_tokens,
            "completion_tokens": output,
            "total_tokens": b.input_tokens + output,
        }
        epilogue.append(
            _data(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "fake-model",
                    "choices": [],
                    "usage": usage,
                }
            )
        )
    error = {"message": b.error_message, "type": b.error_type or "server_error", "code": None}
    return _Frames(
        preamble=[chunk({"role": "assistant", "content": ""})],
        content=content,
        epilogue=epilogue,
        end_marker=b"data: [DONE]\n\n",
        error=_data({"error": error}),
        malformed=b'data: {"choices": [{"delta": \n\n',
    )


def _anthropic_frames(b: Behavior) -> _Frames:
    output = len(b.tokens) if b.output_tokens is None else b.output_tokens
    message: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": "fake-model",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": b.input_tokens, "output_tokens": 1},
    }
    preamble = [
        _event("message_start", {"type": "message_start", "message": message}),
        _event("ping", {"type": "ping"}),
    ]
    content: list[bytes] = []
    block = 0

    def start(index: int, content_block: dict[str, Any]) -> bytes:
        return _event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": content_block},
        )

    def delta(index: int, value: dict[str, Any]) -> bytes:
        return _event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": value}
        )

    def stop(index: int) -> bytes:
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    if b.tokens:
        # Block start and stop ride with the first and last delta: they are not content frames.
        content = [delta(0, {"type": "text_delta", "text": token}) for token in b.tokens]
        content[0] = start(0, {"type": "text", "text": ""}) + content[0]
        content[-1] += stop(0)
        block = 1
    for index, call in enumerate(b.tool_calls):
        tool = {
            "type": "tool_use",
            "id": call.call_id or f"toolu_{index}",
            "name": call.name,
            "input": {},
        }
        content.append(start(block, tool))
        for piece in call.arguments:
            content.append(delta(block, {"type": "input_json_delta", "partial_json": piece}))
        content[-1] += stop(block)
        block += 1
    finish = b.finish_reason or ("tool_use" if b.tool_calls else "end_turn")
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": finish, "stop_sequence": None},
        "usage": {"output_tokens": output},
    }
    error = {"type": b.error_type or "overloaded_error", "message": b.error_message}
    return _Frames(
        preamble=preamble,
        content=content,
        epilogue=[_event("message_delta", message_delta)],
        end_marker=_event("message_stop", {"type": "message_stop"}),
        error=_event("error", {"type": "error", "error": error}),
        malformed=b'event: content_block_delta\ndata: {"type": "content_block_delta", \n\n',
    )
