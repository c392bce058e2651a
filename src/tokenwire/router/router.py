"""The response router: after a turn's ``done``, send its record to every route that wants it.

    router = Router()
    router.route("alerts", FieldEquals(field="structured.data.sentiment", equals="negative"),
                 notify_team, timeout_s=5)
    router.route("audit", None, JsonlSink("turns.jsonl"))      # a sink is a handler too
    results = await router.dispatch(record)                   # one RouteResult per matched route

What callers rely on:

- every route whose condition matches runs concurrently with the others, on its own copy of
  the record (a handler that mutates it cannot disturb another route);
- a route's fault stays in its :class:`RouteResult`: an exception is captured, a route still
  running after its ``timeout_s`` is cancelled and abandoned (``outcome="timeout"``), so
  ``dispatch`` returns within the largest matched timeout plus scheduling overhead even if a
  handler ignores cancellation, and it never raises for a route's fault;
- results come in registration order, one per matched route; routes that did not match get
  none.

A sync handler runs in one of the router's worker threads (a thread cannot be cancelled: after
its timeout it is abandoned, not stopped). An async handler runs on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from .builtin import build_sinks
from .conditions import BaseCondition
from .config import RouterSettings
from .record import ROUTE_NAME, idempotency_key
from .result import Outcome, ResultObserver, RouteResult
from .sinks import DeliveryError, Sink

logger = logging.getLogger("tokenwire.router")

Predicate = Callable[[Mapping[str, Any]], bool]
Handler = Callable[[dict[str, Any]], Any]
"""Receives the record (a private copy); may be async. Its return value is ignored."""

_STRAGGLER_GRACE_S = 1.0


class Route:
    """One registered route: a name, when it applies, what it does, how long it may take."""

    def __init__(
        self, name: str, condition: Predicate, target: Handler | Sink, timeout_s: float
    ) -> None:
        self.name = name
        self.condition = condition
        self.target = target
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"Route({self.name!r}, {self.target!r}, timeout_s={self.timeout_s:g})"


class Router:
    """Routes turn records; use as ``async with Router() as router`` or call :meth:`aclose`."""

    def __init__(self, *, default_timeout_s: float = 30.0, sync_workers: int = 4) -> None:
        self.default_timeout_s = default_timeout_s
        self._routes: dict[str, Route] = {}
        self._observers: list[ResultObserver] = []
        self._sync_workers = sync_workers
        self._executor: ThreadPoolExecutor | None = None
        self._stragglers: set[asyncio.Task[None]] = set()
        self._closed = False
        self.outcomes: collections.Counter[tuple[str, Outcome]] = collections.Counter()
        """Results so far by (route, outcome): a cheap health view without Prometheus."""

    @property
    def routes(self) -> tuple[Route, ...]:
        return tuple(self._routes.values())

    def route(
        self,
        name: str,
        condition: BaseCondition | Predicate | None,
        handler: Handler | Sink,
        *,
        timeout_s: float | None = None,
    ) -> Route:
        """Register a route. ``condition`` None always matches; a callable gets the record and
        returns a bool; ``handler`` is a function (sync or async) taking the record, or a
        :class:`~tokenwire.router.sinks.Sink`, which also gets the idempotency key.

        Raises ``ValueError`` for a malformed or duplicate name or a timeout that is not > 0.
        """
        if not ROUTE_NAME.match(name):
            raise ValueError(f"route name {name!r} must match {ROUTE_NAME.pattern}")
        if name in self._routes:
            raise ValueError(f"route {name!r} is already registered")
        timeout = self.default_timeout_s if timeout_s is None else timeout_s
        if not timeout > 0:
            raise ValueError("timeout_s must be greater than 0")
        if condition is None:
            predicate: Predicate = _always
        elif isinstance(condition, BaseCondition):
            predicate = condition.matches
        else:
            predicate = condition
        route = Route(name, predicate, handler, timeout)
        self._routes[name] = route
        return route

    def observe(self, observer: ResultObserver) -> None:
        """Call ``observer(result)`` for every route result (metrics); its errors are logged."""
        self._observers.append(observer)

    @classmethod
    def from_settings(
        cls,
        settings: RouterSettings,
        *,
        environ: Mapping[str, str] | None = None,
        store_url: str | None = None,
    ) -> Router:
        """A router with the built-in routes of ``settings``. Raises ``ValueError`` when a
        webhook's ``secret_env`` names a variable that is not set in ``environ`` (os.environ),
        or an ``sql`` sink has neither its own ``url`` nor ``store_url``."""
        sinks = build_sinks(settings, os.environ if environ is None else environ, store_url)
        router = cls(default_timeout_s=settings.default_timeout_s)
        for name, sink in sinks.items():
            spec = settings.routes[name]
            router.route(name, spec.when, sink, timeout_s=spec.timeout_s)
        return router

    async def dispatch(self, record: Mapping[str, Any]) -> list[RouteResult]:
        """Run every matching route on ``record`` (see the module docstring for the contract).

        ``record`` must be JSON-serialisable and carry ``stream_id``. A condition that raises
        counts as an ``error`` result for its route.
        """
        matched, failed = self.matching(record)
        pending: list[Awaitable[RouteResult]] = list(failed)
        pending.extend(self.deliver(name, record) for name in matched)
        return list(await asyncio.gather(*pending))

    def matching(self, record: Mapping[str, Any]) -> tuple[list[str], list[Awaitable[RouteResult]]]:
        """The names of the routes whose condition matches ``record``, in registration order,
        and the ``error`` results (to await) of the routes whose condition raised."""
        stream_id = str(record.get("stream_id", ""))
        matched: list[str] = []
        failed: list[Awaitable[RouteResult]] = []
        for route in self._routes.values():
            try:
                if route.condition(record):
                    matched.append(route.name)
            except Exception as exc:
                logger.warning("route %s: condition failed", route.name, exc_info=True)
                key = idempotency_key(stream_id, route.name)
                failed.append(self._finish(route, key, "error", 0, _describe(exc), 0.0))
        return matched, failed

    async def deliver(self, name: str, record: Mapping[str, Any]) -> RouteResult:
        """Run route ``name`` on ``record`` once (its sink retries within its timeout), whatever
        its condition says: for callers that matched it earlier, like the durable outbox.
        Raises ``KeyError`` for a route that is not registered."""
        route = self._routes[name]
        key = idempotency_key(str(record.get("stream_id", "")), name)
        if self._closed:
            return await self._finish(route, key, "error", 0, "router is closed", 0.0)
        try:
            encoded = orjson.dumps(record)
        except TypeError as exc:
            return await self._finish(route, key, "error", 0, _describe(exc), 0.0)
        # Every route gets its own copy, decoded from the JSON a sink would send.
        return await self._run(route, orjson.loads(encoded), key)

    async def _run(self, route: Route, record: dict[str, Any], key: str) -> RouteResult:
        attempts = [0]

        def on_attempt(n: int) -> None:
            attempts[0] = n

        started = time.perf_counter()
        work = asyncio.create_task(self._invoke(route, record, key, on_attempt))
        try:
            await asyncio.wait({work}, timeout=route.timeout_s)
        except asyncio.CancelledError:
            work.cancel()
            raise
        elapsed = (time.perf_counter() - started) * 1000
        if not work.done():
            # Cancel, but do not wait: a handler that swallows the cancellation must not hold
            # up the others. aclose() collects what is left.
            work.cancel()
            self._stragglers.add(work)
            work.add_done_callback(self._drop_straggler)
            error = f"timed out after {route.timeout_s:g}s"
            logger.warning("route %s: %s (key %s)", route.name, error, key)
            return await self._finish(route, key, "timeout", attempts[0], error, elapsed)
        if work.cancelled():
            return await self._finish(route, key, "error", attempts[0], "cancelled", elapsed)
        exc = work.exception()
        if exc is None:
            return await self._finish(route, key, "ok", attempts[0], None, elapsed)
        retryable = True
        if isinstance(exc, DeliveryError):
            attempts[0] = max(attempts[0], exc.attempts)
            retryable = exc.retryable
            logger.warning("route %s: %s (key %s)", route.name, exc, key)
        else:
            logger.warning("route %s failed (key %s)", route.name, key, exc_info=exc)
        return await self._finish(
            route, key, "error", attempts[0], _describe(exc), elapsed, retryable=retryable
        )

    async def _invoke(
        self, route: Route, record: dict[str, Any], key: str, on_attempt: Callable[[int], None]
    ) -> None:
        target = route.target
        if isinstance(target, Sink):
            await target.deliver(record, key, on_attempt=on_attempt)
            return
        on_attempt(1)
        if _is_async(target):
            await target(record)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self._sync_workers, thread_name_prefix="tokenwire-route"
            )
        result = await asyncio.get_running_loop().run_in_executor(self._executor, target, record)
        if inspect.isawaitable(result):  # e.g. a partial of an async function
            await result

    async def _finish(
        self,
        route: Route,
        key: str,
        outcome: Outcome,
        attempts: int,
        error: str | None,
        elapsed_ms: float,
        *,
        retryable: bool = True,
    ) -> RouteResult:
        result = RouteResult(
            route=route.name,
            ok=outcome == "ok",
            retryable=retryable and outcome != "ok",
            attempts=attempts,
            error=error,
            duration_ms=round(elapsed_ms, 3),
            idempotency_key=key,
            outcome=outcome,
        )
        self.outcomes[route.name, outcome] += 1
        for observer in self._observers:
            try:
                observer(result)
            except Exception:
                logger.exception("route result observer %r failed", observer)
        return result

    def _drop_straggler(self, task: asyncio.Task[None]) -> None:
        self._stragglers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.info("route finished after its timeout with %r", task.exception())

    async def aclose(self) -> None:
        """Stop accepting dispatches, cancel routes left running after their timeout (waiting
        briefly), close every sink and the worker threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._stragglers:
            for task in self._stragglers:
                task.cancel()
            await asyncio.wait(set(self._stragglers), timeout=_STRAGGLER_GRACE_S)
        for route in self._routes.values():
            if isinstance(route.target, Sink):
                try:
                    await route.target.aclose()
                except Exception:
                    logger.exception("closing the sink of route %s failed", route.name)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _always(record: Mapping[str, Any]) -> bool:
    return True


def _is_async(handler: object) -> bool:
    call = getattr(handler, "__call__", None)  # noqa: B004 - an instance with async __call__
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
