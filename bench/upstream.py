"""A fast OpenAI-compatible streaming upstream for loopback benchmarks.

    python bench/upstream.py --port 8101 [--tokens 200] [--rate 50]

``POST /v1/chat/completions`` with ``"stream": true`` answers with N content chunks in the real
OpenAI ``chat.completion.chunk`` format, one every 1/rate seconds, then a finish chunk
(``finish_reason: "stop"``), a usage chunk (``choices: []``) and ``data: [DONE]``. ``max_tokens``
in the request overrides N. Without ``stream`` it answers one ``chat.completion`` at once.
``GET /v1/models`` lists the one model; ``GET /health`` answers 200.

Token i is the text ``"w{i}~ "``: the ``~`` marks one token, so a client counts tokens by counting
``~`` in the text it receives, however a relay coalesces or splits the deltas.

Why it is cheap (NOTES.md: a plain asyncio mock costs ~15 us CPU per token): raw asyncio
protocols on uvloop, every chunk pre-encoded once (HTTP chunked framing included), and one timer
wheel instead of one sleeping task per stream. The wheel ticks every millisecond; a stream sits
in the slot of the tick its request arrived in and gets its next token every ``period`` ticks,
so each stream keeps its own phase while the loop runs one timer for all of them. If the loop
falls behind, overdue ticks are replayed, so a stream catches up rather than slowing down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

CHUNK_END = b"0\r\n\r\n"
SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
)


def _chunk(payload: bytes) -> bytes:
    """Frame one piece of body as an HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def token_text(i: int) -> str:
    return f"w{i}~ "


class Script:
    """The pre-encoded chunks of one (model, n_tokens) stream."""

    def __init__(self, model: str, n_tokens: int) -> None:
        base = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "system_fingerprint": None,
        }

        def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
            return {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        role = _sse(chunk({"role": "assistant", "content": ""}))
        self.tokens = [_chunk(_sse(chunk({"content": token_text(i)}))) for i in range(n_tokens)]
        if self.tokens:
            # The role chunk travels with the first token, as one write.
            self.tokens[0] = _chunk(role) + self.tokens[0]
        else:
            self.tokens = [_chunk(role)]
        usage = {"prompt_tokens": 10, "completion_tokens": n_tokens, "total_tokens": 10 + n_tokens}
        self.tail = (
            _chunk(_sse(chunk({}, "stop")))
            + _chunk(_sse({**base, "choices": [], "usage": usage}))
            + _chunk(b"data: [DONE]\n\n")
            + CHUNK_END
        )
        self.full = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 1700000000,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(token_text(i) for i in range(n_tokens)),
                        },
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        ).encode()


class Stream:
    __slots__ = ("conn", "next", "script")

    def __init__(self, conn: Connection, script: Script) -> None:
        self.conn = conn
        self.script = script
        self.next = 1  # token 0 went out with the headers


class Wheel:
    """One 1 ms timer driving every active stream."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
        self.loop = loop
        self.res = 0.001
        self.period = max(1, round(interval_s / self.res))
        self.slots: list[list[Stream]] = [[] for _ in range(self.period)]
        self.t0 = loop.time()
        self.tick = 0  # last tick processed
        self.active = 0
        self.handle: asyncio.TimerHandle | None = None

    def now_tick(self) -> int:
        return int((self.loop.time() - self.t0) / self.res)

    def add(self, stream: Stream) -> None:
        # The first token was written now, so the next one is due one period from this tick.
        self.slots[self.now_tick() % self.period].append(stream)
        self.active += 1
        if self.handle is None:
            self.tick = self.now_tick()
            self._schedule()

    def _schedule(self) -> None:
        # Never less than one tick ahead: uvloop rounds timers down to whole milliseconds, so a
        # sub-millisecond delay fires at once, finds no tick due yet and re-arms: a busy loop.
        delay = self.t0 + (self.tick + 1) * self.res - self.loop.time()
        self.handle = self.loop.call_later(max(delay, self.res), self._run)

    def _run(self) -> None:
        target = self.now_tick()
        while self.tick < target:
            self.tick += 1
            slot_i = self.tick % self.period
            slot = self.slots[slot_i]
            if not slot:
                continue
            keep: list[Stream] = []
            for s in slot:
                conn = s.conn
                if conn.closed:
                    self.active -= 1
                    continue
                tokens = s.script.tokens
                if s.next < len(tokens):
                    conn.transport.write(tokens[s.next])
                    s.next += 1
                    keep.append(s)
                else:
                    self.active -= 1
                    conn.transport.write(s.script.tail)
                    conn.finish_response()
            self.slots[slot_i] = keep
        if self.active > 0:
            self._schedule()
        else:
            self.handle = None


class Server:
    def __init__(self, n_tokens: int, rate: float) -> None:
        self.n_tokens = n_tokens
        self.rate = rate
        self.scripts: dict[tuple[str, int], Script] = {}
        self.wheel: Wheel | None = None
        self.requests = 0

    def script(self, model: str, n: int) -> Script:
        key = (model, n)
        s = self.scripts.get(key)
        if s is None:
            s = self.scripts[key] = Script(model, n)
        return s


class Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = b""
        self.busy = False  # a response is streaming
        self.keep_alive = True
        self.closed = False
        self.transport: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._parse()

    def finish_response(self) -> None:
        self.busy = False
        if not self.keep_alive:
            self.transport.close()
            self.closed = True
        elif self.buf:
            self._parse()

    def _parse(self) -> None:
        while not self.busy and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self.transport.close()
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            try:
                method, path, version = head[0].split(" ", 2)
            except ValueError:
                self.transport.close()
                return
            headers = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            conn_hdr = headers.get("connection", "").lower()
            self.keep_alive = conn_hdr != "close" and version != "HTTP/1.0"
            self._handle(method, path.split("?", 1)[0], body)

    def _send_json(self, status: str, body: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (
                status.encode(),
                len(body),
                b"" if self.keep_alive else b"Connection: close\r\n",
                body,
            )
        )
        if not self.keep_alive:
            self.transport.close()
            self.closed = True

    def _handle(self, method: str, path: str, body: bytes) -> None:
        srv = self.server
        if method == "GET" and path in ("/v1/models", "/models"):
            data = {
                "object": "list",
                "data": [{"id": "bench", "object": "model", "created": 0, "owned_by": "bench"}],
            }
            self._send_json("200 OK", json.dumps(data).encode())
            return
        if method == "GET" and path in ("/health", "/healthz", "/"):
            self._send_json("200 OK", b'{"ok":true}')
            return
        if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            try:
                req = json.loads(body or b"{}")
            except ValueError:
                self._send_json("400 Bad Request", b'{"error":{"message":"invalid json"}}')
                return
            n = req.get("max_tokens") or req.get("max_completion_tokens") or srv.n_tokens
            n = max(1, min(int(n), 100_000))
            script = srv.script(str(req.get("model") or "bench"), n)
            srv.requests += 1
            if not req.get("stream"):
                self._send_json("200 OK", script.full)
                return
            self.busy = True
            head = SSE_HEADERS + (b"\r\n" if self.keep_alive else b"Connection: close\r\n\r\n")
            self.transport.write(head + script.tokens[0])
            if srv.wheel is None:
                srv.wheel = Wheel(asyncio.get_running_loop(), 1.0 / srv.rate)
            srv.wheel.add(Stream(self, script))
            return
        self._send_json("404 Not Found", b'{"error":{"message":"not found"}}')


async def main_async(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = Server(args.tokens, args.rate)
    srv = await loop.create_server(
        lambda: Connection(server), args.host, args.port, backlog=4096, reuse_address=True
    )
    port = srv.sockets[0].getsockname()[1]
    print(f"upstream ready http://{args.host}:{port}/v1 pid={os.getpid()}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + args.max_seconds if args.max_seconds else None
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            if deadline and time.monotonic() > deadline:
                break
    srv.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8101)
    p.add_argument("--tokens", type=int, default=200, help="tokens per stream (default 200)")
    p.add_argument("--rate", type=float, default=50.0, help="tokens/s per stream (default 50)")
    p.add_argument(
        "--max-seconds", type=float, default=3600.0, help="exit after this long (safety bound)"
    )
    args = p.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        print("uvloop not available, using asyncio's loop", file=sys.stderr)
        asyncio.run(main_async(args))
    else:
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
