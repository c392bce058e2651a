"""Load generator: C concurrent SSE streams against one target, in its own process.

    python bench/loadgen.py --url http://127.0.0.1:8101 --mode openai -c 200 \
        --duration 14 --ramp 4 --out /tmp/run.json

Each of C workers opens a keep-alive HTTP/1.1 connection and runs streams back to back until
``--duration`` seconds have passed since the start, then stops starting new ones; streams in
flight finish, and everything is cut at ``--cap`` seconds (hard bound). Worker starts are spread
evenly over ``--ramp`` seconds so that, once every worker runs, arrivals are spread over the
streams' phase instead of arriving in one burst.

Modes:
- ``openai``: ``POST /v1/chat/completions`` (stream=true); a token is counted in every ``data:``
  line; ``data: [DONE]`` ends the stream.
- ``tokenwire``: ``POST /v1/streams``; tokens are counted only in ``event: text.delta`` frames
  (``text.done`` and ``done`` repeat the whole text); ``event: done`` ends the stream,
  ``event: turn.error`` (the terminal ``error``) fails it.

Tokens are counted by the ``~`` that ends each upstream token's text (see upstream.py), so
coalesced deltas still count every token they carry. Tokens that arrive together share one
receive time: the first of them gets the gap since the previous arrival, the rest a gap of 0.

Cheapness matters (this process shares 2 cores with the upstream and the target): raw asyncio
protocols on uvloop, an in-place chunked decoder, no JSON parsing on the token path.

Output (``--out``): JSON with one record per stream (ttft, duration, tokens, ok, error), a
token-arrival timeline in 100 ms buckets, and the raw inter-token gaps (float64, seconds) in
``<out>.gaps``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

MARK = ord("~")


class StreamRecord:
    __slots__ = ("done", "error", "last", "t_end", "t_first", "t_start", "tokens")

    def __init__(self, t_start: float) -> None:
        self.t_start = t_start
        self.t_first = 0.0
        self.t_end = 0.0
        self.last = 0.0
        self.tokens = 0
        self.done = False  # terminal event seen
        self.error = ""


class Stats:
    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.gaps = array.array("d")
        self.timeline = [0] * 4000  # 100 ms buckets, 400 s
        self.records: list[StreamRecord] = []


class Client(asyncio.Protocol):
    """One keep-alive connection running one stream at a time."""

    def __init__(self, mode: str, stats: Stats) -> None:
        self.tokenwire = mode == "tokenwire"
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.response_done: asyncio.Future[None] | None = None
        self.rec: StreamRecord | None = None
        self._reset()

    def _reset(self) -> None:
        self.head = b""
        self.in_body = False
        self.chunked = False
        self.remaining = -1  # content-length left, or -1 until EOF
        self.chunk_left = 0  # bytes left in the current chunk (+2 for its CRLF)
        self.cbuf = b""  # partial chunk-size line
        self.sse = b""
        self.status = 0
        self.keep_alive = True

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.rec is not None and not self.rec.done and not self.rec.error:
            self.rec.error = "connection closed"
        self._finish()

    def start(self, request: bytes, rec: StreamRecord) -> asyncio.Future[None]:
        self._reset()
        self.rec = rec
        self.response_done = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        return self.response_done

    def _finish(self) -> None:
        if self.rec is not None and not self.rec.t_end:
            self.rec.t_end = time.perf_counter()
        if self.response_done is not None and not self.response_done.done():
            self.response_done.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.rec is None:
            return
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.head[:end].decode("latin-1").split("\r\n")
            data = self.head[end + 4 :]
            self.head = b""
            self.in_body = True
            try:
                self.status = int(lines[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                self.status = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                k = k.strip().lower()
                v = v.strip().lower()
                if k == "transfer-encoding" and "chunked" in v:
                    self.chunked = True
                elif k == "content-length":
                    self.remaining = int(v)
                elif k == "connection" and v == "close":
                    self.keep_alive = False
            if self.status != 200:
                self.rec.error = f"http {self.status}"
            if not data and not (self.remaining == 0 and not self.chunked):
                return
        if self.chunked:
            self._chunked(data)
        else:
            self._body(data)
            if self.remaining >= 0:
                self.remaining -= len(data)
                if self.remaining <= 0:
                    self._finish()

    def _chunked(self, data: bytes) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            if self.chunk_left > 0:
                take = min(self.chunk_left, n - pos)
                # the last 2 bytes of each chunk are its CRLF, not body
                body = min(take, max(0, self.chunk_left - 2))
                if body:
                    self._body(data[pos : pos + body])
                self.chunk_left -= take
                pos += take
                continue
            nl = data.find(b"\r\n", pos)
            if nl < 0:
                self.cbuf += data[pos:]
                return
            line = self.cbuf + data[pos:nl]
            self.cbuf = b""
            pos = nl + 2
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                self._finish()  # trailers are ignored; the server sends none
                return
            self.chunk_left = size + 2

    def _body(self, data: bytes) -> None:
        rec = self.rec
        assert rec is not None
        if rec.error:
            return
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        buf = self.sse + data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.sse = buf
            return
        self.sse = buf[end + 2 :]
        now = 0.0
        for block in buf[:end].split(b"\n\n"):
            if self.tokenwire:
                if b"event: text.delta" in block or b"event:text.delta" in block:
                    n = block.count(MARK)
                elif b"event: done" in block or b"event:done" in block:
                    rec.done = True
                    continue
                elif b"event: turn.error" in block or b"event:turn.error" in block:
                    rec.error = "error event: " + block[-300:].decode("utf-8", "replace")
                    continue
                else:
                    continue
            else:
                if b"data: [DONE]" in block or b"data:[DONE]" in block:
                    rec.done = True
                    continue
                n = block.count(MARK)
            if not n:
                continue
            if not now:
                now = time.perf_counter()
            st = self.stats
            if rec.tokens == 0:
                rec.t_first = now
            else:
                st.gaps.append(now - rec.last)
                n_zero = n - 1
                if n_zero:
                    st.gaps.extend([0.0] * n_zero)
            if rec.tokens == 0 and n > 1:
                st.gaps.extend([0.0] * (n - 1))
            rec.last = now
            rec.tokens += n
            b = int((now - st.t0) * 10)
            if b < len(st.timeline):
                st.timeline[b] += n


def build_request(url: str, mode: str, max_tokens: int, api_key: str, model: str) -> bytes:
    u = urlsplit(url)
    base = u.path.rstrip("/")
    if mode == "tokenwire":
        path = base + "/v1/streams"
        body = json.dumps({"prompt": "Say something.", "max_tokens": max_tokens})
    else:
        suffix = "/chat/completions" if base.endswith("/v1") else "/v1/chat/completions"
        path = base + suffix
        body = json.dumps(
            {
                "model": model,
                "messages": [{"role": "user", "content": "Say something."}],
                "stream": True,
                "max_tokens": max_tokens,
            }
        )
    headers = [
        f"POST {path} HTTP/1.1",
        f"Host: {u.hostname}:{u.port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(body)}",
    ]
    if api_key:
        headers.append(f"Authorization: Bearer {api_key}")
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


async def run(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    u = urlsplit(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    request = build_request(args.url, args.mode, args.max_tokens, args.api_key, args.model)
    t0 = time.perf_counter()
    stats = Stats(t0)
    stop_at = t0 + args.duration
    cap_at = t0 + args.cap
    n_total = args.concurrency * args.nprocs

    async def worker(i: int) -> None:
        # global worker index across loadgen processes, for an even ramp
        g = i * args.nprocs + args.index
        await asyncio.sleep(args.ramp * g / max(1, n_total))
        client: Client | None = None
        while time.perf_counter() < stop_at:
            if client is None or client.closed.done():
                try:
                    _, client = await asyncio.wait_for(
                        loop.create_connection(lambda: Client(args.mode, stats), host, port),
                        timeout=max(0.1, min(10.0, cap_at - time.perf_counter())),
                    )
                except (OSError, TimeoutError) as e:
                    rec = StreamRecord(time.perf_counter())
                    rec.error = f"connect: {type(e).__name__}: {e}"
                    rec.t_end = time.perf_counter()
                    stats.records.append(rec)
                    client = None
                    await asyncio.sleep(0.05)
                    continue
            rec = StreamRecord(time.perf_counter())
            stats.records.append(rec)
            fut = client.start(request, rec)
            timeout = min(args.stream_timeout, cap_at - time.perf_counter())
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.01, timeout))
            except TimeoutError:
                rec.error = rec.error or "timeout"
                rec.t_end = time.perf_counter()
                assert client.transport is not None
                client.transport.abort()
                client = None
                continue
            if not rec.done and not rec.error:
                rec.error = "no terminal event"
            if rec.tokens != args.expect_tokens and not rec.error:
                rec.error = f"short: {rec.tokens} tokens"
            if not client.keep_alive:
                assert client.transport is not None
                client.transport.close()
                client = None
        if client is not None and client.transport is not None:
            client.transport.close()

    tasks = [asyncio.create_task(worker(i)) for i in range(args.concurrency)]
    done, pending = await asyncio.wait(tasks, timeout=args.cap + 2)
    for t in pending:
        t.cancel()
    for t in done:
        if t.exception() is not None:
            print(f"worker failed: {t.exception()!r}", file=sys.stderr)
    t_end = time.perf_counter()
    with open(args.out + ".gaps", "wb") as f:  # noqa: ASYNC230 - the load is over
        stats.gaps.tofile(f)
    last_bucket = int((t_end - t0) * 10) + 1
    return {
        "mode": args.mode,
        "url": args.url,
        "concurrency": args.concurrency,
        "index": args.index,
        "nprocs": args.nprocs,
        "duration": args.duration,
        "ramp": args.ramp,
        "elapsed": t_end - t0,
        "cpu_s": time.process_time(),
        "t0_wall": time.time() - (t_end - t0),
        "timeline": stats.timeline[:last_bucket],
        "streams": [
            {
                "start": r.t_start - t0,
                "ttft": (r.t_first - r.t_start) if r.t_first else None,
                "dur": (r.t_end - r.t_start) if r.t_end else None,
                "tokens": r.tokens,
                "ok": r.done and not r.error and r.tokens == args.expect_tokens,
                "error": r.error,
            }
            for r in stats.records
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True, help="target base URL, e.g. http://127.0.0.1:8101")
    p.add_argument("--mode", choices=["openai", "tokenwire"], default="openai")
    p.add_argument("-c", "--concurrency", type=int, default=50)
    p.add_argument("--duration", type=float, default=14.0, help="start streams until this time")
    p.add_argument("--ramp", type=float, default=4.0, help="spread worker starts over this")
    p.add_argument("--cap", type=float, default=40.0, help="hard bound on the whole run (s)")
    p.add_argument("--stream-timeout", type=float, default=30.0)
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--expect-tokens", type=int, default=200)
    p.add_argument("--api-key", default="")
    p.add_argument("--model", default="bench")
    p.add_argument("--index", type=int, default=0, help="this process's index (multi-process)")
    p.add_argument("--nprocs", type=int, default=1, help="number of loadgen processes")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    args.cap = max(args.cap, args.duration + 1)
    try:
        import uvloop  # type: ignore[import-not-found]

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
