"""The ``tokenwire`` command: serve, worker, chat, providers, keys, kb, migrate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from .auth import Authenticator, InsecureBind, check_bind, new_key_snippet
from .config import Settings, load_settings
from .config_errors import ConfigError
from .engine import Engine, RequestError
from .protocol import Done, Error, Event, Reason, SSEDecoder, TextDelta, decode_event
from .retrieval.cli import add_kb_parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        for line in exc.lines:
            print(f"tokenwire: {line}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"tokenwire: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenwire", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP server (SSE, WebSocket, REST)")
    _config_arg(serve)
    serve.add_argument("--host", help="bind address (default: config, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: config, 8000; 0 = any free)")
    serve.add_argument("--scripted", action="store_true", help="enable the scripted provider")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument(
        "--redis",
        metavar="URL",
        help="run as a stateless gateway: turns run on `tokenwire worker`s meeting in this Redis",
    )
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run turns taken from Redis (scale-out)")
    _config_arg(worker)
    worker.add_argument("--redis", metavar="URL", help="the Redis the gateways enqueue turns in")
    worker.add_argument("--scripted", action="store_true", help="enable the scripted provider")
    worker.add_argument("--concurrency", type=int, default=8, help="turns run at once (default: 8)")
    worker.add_argument("--host", default="127.0.0.1", help="/healthz and /metrics address")
    worker.add_argument("--port", type=int, default=8100, help="/healthz and /metrics port")
    worker.add_argument("--name", help="this worker's consumer name (default: host-pid-random)")
    worker.set_defaults(func=_worker)

    chat = sub.add_parser("chat", help="stream one answer to the terminal")
    _config_arg(chat)
    chat.add_argument("prompt")
    chat.add_argument(
        "--url",
        help="use a running server (e.g. http://127.0.0.1:8000); its API key, if it needs one, "
        "from $TOKENWIRE_API_KEY",
    )
    chat.add_argument("--route", help="route name (default: the config's default route)")
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--script", help="for a scripted route: the script, as JSON")
    chat.set_defaults(func=_chat)

    providers = sub.add_parser("providers", help="list providers and whether each is reachable")
    _config_arg(providers)
    providers.set_defaults(func=_providers)

    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(required=True, metavar="ACTION")
    new_key = keys_sub.add_parser(
        "new", help="make an API key: prints the key once, and the config lines with its hash"
    )
    new_key.add_argument("--tenant", required=True, help="the tenant the key opens")
    new_key.add_argument("--name", help="a label for the key (shown in logs)")
    new_key.set_defaults(func=_new_key)

    add_kb_parser(sub, resolve_db_url=_kb_url, common=_config_arg)

    migrate = sub.add_parser(
        "migrate", help="create or upgrade the store's tables ([store] url); serve does it too"
    )
    _config_arg(migrate)
    migrate.set_defaults(func=_migrate)
    return parser


def _kb_url(args: argparse.Namespace) -> str:
    """The knowledge base the config names: ``[retrieval] url``, else the store's database."""
    if getattr(args, "db", None):
        return str(args.db)
    settings = load_settings(args.config)
    url = settings.retrieval.url or settings.store.url
    if not url:
        raise ValueError("no knowledge base: set [retrieval] url or [store] url, or pass --db")
    return url


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (default: $TOKENWIRE_CONFIG, or none)")


# -- serve -----------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .server import create_app
    from .server.logfilter import quiet_client_input

    settings = _settings(args)
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    auth = Authenticator(settings.auth)
    try:
        check_bind(
            host, auth_enabled=auth.enabled, allow_insecure=settings.auth.allow_insecure_bind
        )
    except InsecureBind as exc:
        print(f"tokenwire: {exc}", file=sys.stderr)
        return 2
    # The host bound is a name the server answers to (see [server] allowed_hosts).
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"host": host})}
    )
    engine = Engine(settings)
    app = create_app(engine=engine)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=args.access_log,
        log_level="info",
        ws_max_size=settings.limits.max_ws_frame_bytes,
        timeout_graceful_shutdown=10,
    )
    quiet_client_input()  # no client input may put a traceback in the log

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                # Everything imports and startup made lives for the process: out of the
                # collector's sight, so its first full collection does not stall a request
                # for ~0.1 s (docs/PERFORMANCE.md, "Where the time goes").
                gc.freeze()
                bound = self.servers[0].sockets[0].getsockname()
                print(f"tokenwire serving on http://{host}:{bound[1]}", flush=True)

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            # Stop the turns first, so every open stream gets its terminal event before the
            # connections are closed.
            await engine.aclose()
            await super().shutdown(sockets)

    Server(config).run()
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.scripted:
        overrides["scripted"] = True
    settings = load_settings(args.config, **overrides)
    if getattr(args, "redis", None):
        settings = settings.model_copy(
            update={"redis": settings.redis.model_copy(update={"url": args.redis})}
        )
    return settings


def _worker(args: argparse.Namespace) -> int:
    from .cluster.worker import Worker, serve_worker

    settings = _settings(args)
    if not settings.redis.url:
        print("tokenwire: a worker needs --redis URL (or [redis] url)", file=sys.stderr)
        return 2
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker = Worker(settings, concurrency=args.concurrency, name=args.name)
    asyncio.run(serve_worker(worker, host=args.host, port=args.port))
    return 0


# -- keys, migrate ---------------------------------------------------------------------------


def _new_key(args: argparse.Namespace) -> int:
    key, snippet = new_key_snippet(args.tenant, args.name)
    print(f"API key (shown once; store it now):\n  {key}\n", file=sys.stderr)
    print("Add to the config file (only the hash is kept):", file=sys.stderr)
    print(snippet)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from .store import migrate_sync

    settings = load_settings(args.config)
    if not settings.store.url:
        print("tokenwire: [store] url is empty: persistence is off", file=sys.stderr)
        return 2
    migrate_sync(settings.store.url)
    print(f"tokenwire: the store at {settings.store.url} is up to date", file=sys.stderr)
    return 0


# -- chat ------------------------------------------------------------------------------------


def _chat(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"prompt": args.prompt}
    if args.route:
        body["route"] = args.route
    if args.max_tokens:
        body["max_tokens"] = args.max_tokens
    if args.script:
        body["script"] = json.loads(args.script)
    runner = _chat_remote(args.url, body) if args.url else _chat_embedded(args.config, body)
    terminal = asyncio.run(runner)
    return 0 if isinstance(terminal, Done) else 1


class _Printer:
    """Writes deltas as they come; reports TTFT and tokens/s at the end."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first: float | None = None

    def event(self, event: Event) -> Done | Error | None:
        if isinstance(event, TextDelta):
            if self.first is None:
                self.first = time.perf_counter()
            sys.stdout.write(event.delta)
            sys.stdout.flush()
        elif isinstance(event, Done | Error):
            self.summary(event)
            return event
        return None

    def summary(self, terminal: Done | Error) -> None:
        total = time.perf_counter() - self.t0
        print(file=sys.stdout)
        if isinstance(terminal, Error):
            print(f"[error {terminal.code}] {terminal.message}", file=sys.stderr)
            return
        ttft = (self.first - self.t0) if self.first is not None else None
        tokens = (terminal.usage or {}).get("output_tokens", 0)
        streaming = total - ttft if ttft is not None else 0.0
        rate = tokens / streaming if streaming > 0 else 0.0
        state = "" if not terminal.partial else f" partial ({terminal.reason.value})"
        ttft_text = f"{ttft * 1000:.0f} ms" if ttft is not None else "-"
        print(
            f"[{terminal.reason.value}{state}] TTFT {ttft_text}, {tokens} tokens, "
            f"{rate:.1f} tokens/s, {total:.2f} s total, model {terminal.model}",
            file=sys.stderr,
        )


async def _chat_embedded(config: str | None, body: dict[str, Any]) -> Done | Error | None:
    settings: Settings = load_settings(config)
    printer = _Printer()
    async with Engine(settings) as engine:
        printer.t0 = time.perf_counter()
        try:
            handle = await engine.submit(body)
        except RequestError as exc:
            print(f"tokenwire: {exc.message}", file=sys.stderr)
            return None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, handle.cancel, Reason.CANCELLED)
        async for event in handle.events():
            terminal = printer.event(event)
            if terminal is not None:
                return terminal
    return None


async def _chat_remote(url: str, body: dict[str, Any]) -> Done | Error | None:
    import httpx

    printer = _Printer()
    base = url.rstrip("/")
    # A server with auth on wants a key: from $TOKENWIRE_API_KEY (not a flag, so it stays out
    # of shell history and process listings).
    key = os.environ.get("TOKENWIRE_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    timeout = httpx.Timeout(10, read=None)
    async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
        async with client.stream("POST", f"{base}/v1/streams", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                print(f"tokenwire: HTTP {response.status_code}: {response.text}", file=sys.stderr)
                return None
            stream_id = response.headers.get("x-tokenwire-stream-id", "")

            async def cancel() -> None:
                await client.post(f"{base}/v1/streams/{stream_id}/cancel")

            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signal.SIGINT, lambda: loop.create_task(cancel()))
            decoder = SSEDecoder()
            async for chunk in response.aiter_bytes():
                for message in decoder.feed(chunk):
                    terminal = printer.event(decode_event(message.data))
                    if terminal is not None:
                        return terminal
    return None


# -- providers -------------------------------------------------------------------------------


def _providers(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    return asyncio.run(_check_providers(settings))


async def _check_providers(settings: Settings) -> int:
    from .providers.registry import build_provider

    failures = 0
    routes_of: dict[str, list[str]] = {}
    for route, route_cfg in settings.routes.items():
        for name in route_cfg.provider_names:
            routes_of.setdefault(name, []).append(route)
    print(f"{'PROVIDER':<16} {'KIND':<10} {'MODEL':<28} {'REACHABLE':<10} DETAIL")
    for name, cfg in settings.providers.items():
        provider = build_provider(name, cfg)
        try:
            health = await provider.check()
        finally:
            await provider.aclose()
        failures += not health.reachable
        reachable = "yes" if health.reachable else "NO"
        used = ", ".join(routes_of.get(name, [])) or "no route"
        print(
            f"{name:<16} {provider.kind:<10} {provider.model:<28} {reachable:<10} "
            f"{health.detail} (routes: {used})"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
