"""The engine: accepts turns, runs them, and lets anyone read, follow or stop them.

Library use, no HTTP involved::

    async with Engine(load_settings()) as engine:
        async with contextlib.aclosing(engine.run({"prompt": "Hi"})) as events:
            async for event in events:
                ...

:meth:`Engine.submit` starts a turn and returns a :class:`TurnHandle` at once; the turn runs in
its own task and writes its events to the event log, where any number of readers follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from ..bus import EventLog, Follower, MemoryEventLog, UnknownStream, follow
from ..config import LocalProviderSettings, Settings
from ..output import (
    ExtractionSpec,
    ResolvedSchema,
    SchemaRegistry,
    choose_strategy,
    inline_instructions,
)
from ..protocol import Done, Error, Event, Reason, event_to_dict
from ..providers import GenerationRequest, Message, Provider
from ..providers.registry import build_provider
from ..providers.scripted import ScriptedProvider, parse_script
from ..router import Router, RouterMetrics, build_record
from .extraction import ExtractionPlan
from .hooks import Hooks
from .metrics import EngineMetrics
from .request import DeadlineOverrides, Overloaded, RequestError, TurnRequest
from .scheduler import ProviderScheduler
from .turn import Turn, TurnPlan


@dataclass(frozen=True, slots=True)
class ActiveTurn:
    """A turn in flight, as ``GET /v1/streams?state=active`` lists it."""

    stream_id: str
    route: str
    model: str | None
    age_s: float
    tokens: int
    last_seq: int


class TurnHandle:
    """A started turn: its id, its events (replayable from any seq) and its stop button."""

    def __init__(self, turn: Turn, log: EventLog, *, joined: bool = False) -> None:
        self._turn = turn
        self._log = log
        self.stream_id = turn.stream_id
        self.route = turn.plan.route
        self.joined = joined
        """True when ``submit`` found this turn by its idempotency key instead of starting it."""

    @property
    def background(self) -> bool:
        return self._turn.plan.background

    def attach(self) -> None:
        """Count a reader in (call :meth:`detach` when it leaves)."""
        self._turn.attach()

    def detach(self, *, originator: bool) -> None:
        """A reader left. ``originator``: it was the client that started the turn, whose
        departure applies the request's ``on_disconnect`` policy (viewers never stop a turn)."""
        self._turn.detach(originator=originator)

    @property
    def done(self) -> bool:
        return self._turn.done

    @property
    def terminal(self) -> Done | Error | None:
        return self._turn.terminal

    def follower(self, after_seq: int = 0) -> Follower:
        """A cursor into the stream's log, for readers that manage their own waiting."""
        return self._log.follower(self.stream_id, after_seq)

    def batches(self, after_seq: int = 0) -> AsyncIterator[list[Event]]:
        """The stream's events after ``after_seq``, replayed then live, in batches."""
        return follow(self._log.follower(self.stream_id, after_seq))

    async def events(self, after_seq: int = 0) -> AsyncIterator[Event]:
        """The stream's events after ``after_seq``, one by one, through the terminal event."""
        async for batch in follow(self._log.follower(self.stream_id, after_seq)):
            for event in batch:
                yield event

    def cancel(self, reason: Reason = Reason.CANCELLED) -> bool:
        """Stop the turn (the upstream is aborted). False if it had already ended."""
        return self._turn.stop(reason)

    async def wait(self) -> Done | Error:
        """Wait for the turn to end and return its terminal event."""
        task = self._turn.task
        if task is not None:
            await asyncio.shield(task)
        terminal = self._turn.terminal
        assert terminal is not None, "a finished turn always has its terminal event"
        return terminal


class Engine:
    """Runs turns on the configured providers. Use ``async with`` (or ``open``/``aclose``)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        providers: Mapping[str, Provider] | None = None,
        log: EventLog | None = None,
        router: Router | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        limits = self.settings.limits
        configured = {
            name: build_provider(name, cfg)
            for name, cfg in self.settings.providers.items()
            if providers is None or name not in providers
        }
        self.providers: dict[str, Provider] = {**configured, **(providers or {})}
        self.log: EventLog = log or MemoryEventLog(
            max_events=limits.max_stream_events,
            retention_s=limits.stream_retention_s,
            max_finished=limits.max_retained_streams,
        )
        self.metrics = EngineMetrics()
        self.hooks = Hooks(
            queue_size=limits.hook_queue_size, on_drop=lambda _sub: self.metrics.hook_drops.inc()
        )
        self.schedulers: dict[str, ProviderScheduler] = {
            name: ProviderScheduler(
                concurrency=cfg.concurrency,
                rpm=cfg.rpm,
                tpm=cfg.tpm,
                aging_s=self.settings.scheduler.aging_s,
            )
            for name, cfg in self.settings.providers.items()
            if cfg.concurrency is not None or cfg.rpm is not None or cfg.tpm is not None
        }
        try:
            self.schemas = SchemaRegistry(self.settings.schemas)
        except ValueError as exc:
            raise ValueError(f"[schemas]: {exc}") from None
        self.router = router if router is not None else Router.from_settings(self.settings.router)
        self.router.observe(RouterMetrics(self.metrics.registry).observe)
        self._dispatches: set[asyncio.Task[None]] = set()
        self._route_results: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._recent: OrderedDict[str, Turn] = OrderedDict()
        self._idempotent: OrderedDict[str, tuple[Turn, str]] = OrderedDict()
        self._turns: dict[str, Turn] = {}
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Get providers ready (load the local model unless ``preload = false``)."""
        for name, provider in self.providers.items():
            cfg = self.settings.providers.get(name)
            if isinstance(cfg, LocalProviderSettings) and not cfg.preload:
                continue
            await provider.start()

    async def aclose(self) -> None:
        """Stop every turn in flight (reason ``shutdown``), wait for their terminal events, then
        release the providers."""
        self._closing = True
        turns = list(self._turns.values())
        for turn in turns:
            turn.stop(Reason.SHUTDOWN)
        tasks = [t.task for t in turns if t.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.routes_settled()
        await self.router.aclose()
        self.hooks.close()
        for provider in self.providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()

    async def __aenter__(self) -> Engine:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- turns -----------------------------------------------------------------------------

    def submit(
        self, request: TurnRequest | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> TurnHandle:
        """Validate the request and start its turn. Raises :class:`RequestError` (the
        client's fault) or :class:`Overloaded` (try again later).

        With an ``idempotency_key`` seen before (within the retention of finished streams), the
        turn it started is returned instead (``handle.joined``): a retried POST joins its
        stream rather than starting a second generation. The same key with a different request
        is a :class:`RequestError` (``idempotency_conflict``)."""
        if not isinstance(request, TurnRequest):
            try:
                request = TurnRequest.model_validate(request)
            except ValidationError as exc:
                raise RequestError("invalid_request", _validation_message(exc)) from None
        fingerprint = ""
        if idempotency_key is not None:
            fingerprint = request.model_dump_json()
            known = self._idempotent.get(idempotency_key)
            if known is not None:
                turn, seen = known
                if seen != fingerprint:
                    raise RequestError(
                        "idempotency_conflict",
                        "this Idempotency-Key was used with a different request",
                    )
                return TurnHandle(turn, self.log, joined=True)
        if self._closing:
            raise Overloaded("the server is shutting down", retry_after_s=5)
        if len(self._turns) >= self.settings.limits.max_active_turns:
            self.metrics.rejected.labels("overloaded").inc()
            raise Overloaded(f"{len(self._turns)} turns in flight; the limit is reached")
        plan = self._plan(request)
        turn = Turn(plan, log=self.log, hooks=self.hooks, metrics=self.metrics)
        self.log.open(plan.stream_id)
        self._turns[plan.stream_id] = turn
        self.metrics.active_streams.inc()
        turn.task = asyncio.get_running_loop().create_task(
            self._drive(turn), name=f"tokenwire-turn-{plan.stream_id}"
        )
        if idempotency_key is not None:
            self._idempotent[idempotency_key] = (turn, fingerprint)
            self._trim(self._idempotent)
        return TurnHandle(turn, self.log)

    async def run(self, request: TurnRequest | Mapping[str, Any]) -> AsyncIterator[Event]:
        """Start a turn and yield its events through the terminal one. Leaving the loop early
        (``break``, an exception, closing the generator) stops the turn (``client_gone``)."""
        handle = self.submit(request)
        handle.attach()
        try:
            async for event in handle.events():
                yield event
        finally:
            handle.detach(originator=True)

    def handle(self, stream_id: str) -> TurnHandle:
        """The handle of a turn in flight or recently finished (its events still held).
        Raises :class:`UnknownStream`."""
        turn = self._turns.get(stream_id) or self._recent.get(stream_id)
        if turn is None:
            raise UnknownStream(stream_id)
        self.log.head(stream_id)  # raises UnknownStream once its events have expired
        return TurnHandle(turn, self.log)

    def _trim(self, table: OrderedDict[str, Any]) -> None:
        while len(table) > self.settings.limits.max_retained_streams:
            table.popitem(last=False)

    def cancel(self, stream_id: str, reason: Reason = Reason.CANCELLED) -> bool:
        """Stop a turn in flight. False when it has already ended; :class:`UnknownStream` when
        no such stream is held."""
        turn = self._turns.get(stream_id)
        if turn is None:
            self.log.head(stream_id)  # raises UnknownStream for an id never seen or expired
            return False
        return turn.stop(reason)

    def active(self) -> list[ActiveTurn]:
        """Turns in flight, oldest first."""
        return [
            ActiveTurn(
                stream_id=t.stream_id,
                route=t.plan.route,
                model=t.model,
                age_s=round(t.age_s, 3),
                tokens=t.tokens,
                last_seq=t.lifecycle.seq,
            )
            for t in self._turns.values()
        ]

    def status(self, stream_id: str) -> dict[str, Any]:
        """What ``GET /v1/streams/{id}`` returns. Raises :class:`UnknownStream`."""
        turn = self._turns.get(stream_id)
        if turn is not None:
            return {
                "stream_id": stream_id,
                "state": "active",
                "route": turn.plan.route,
                "model": turn.model,
                "created_at": turn.created_at,
                "age_s": round(turn.age_s, 3),
                "tokens": turn.tokens,
                "last_seq": turn.lifecycle.seq,
            }
        terminal = self.log.terminal(stream_id)
        if terminal is None:
            raise UnknownStream(stream_id)
        if isinstance(terminal, Done):
            state = "incomplete" if terminal.partial else "completed"
        else:
            state = "failed"
        return {
            "stream_id": stream_id,
            "state": state,
            "routes": self.route_results(stream_id),
            "last_seq": terminal.seq,
            "terminal": event_to_dict(terminal),
        }

    def _extraction_plan(
        self, request: TurnRequest, chain: tuple[Provider, ...]
    ) -> ExtractionPlan | None:
        if request.extraction is None:
            return None
        try:
            spec = ExtractionSpec.model_validate(request.extraction)
        except ValidationError as exc:
            raise RequestError(
                "invalid_request", "extraction: " + _validation_message(exc)
            ) from None
        schema = _resolve_schema(self.schemas, spec)
        # A base model does not follow format instructions: `auto` never asks it for a block.
        inline_capable = not any(p.kind == "local" for p in chain)
        defaults = self.settings.extraction
        return ExtractionPlan(
            schema=schema,
            strategy=choose_strategy(spec, inline_capable=inline_capable),
            requested=spec.strategy,
            max_retries=(
                spec.max_retries if "max_retries" in spec.model_fields_set else defaults.max_reasks
            ),
            timeout_s=defaults.timeout_s,
            max_tokens=defaults.max_tokens,
        )

    async def _drive(self, turn: Turn) -> None:
        try:
            await turn.run()
        finally:
            turn.abandon(Reason.SHUTDOWN)
            self._turns.pop(turn.stream_id, None)
            self._recent[turn.stream_id] = turn
            self._trim(self._recent)
            self.metrics.active_streams.dec()
        terminal = turn.terminal
        if isinstance(terminal, Done) and self.router.routes:
            # The system channel runs after `done`, in its own task: a slow or failing route
            # never delays the stream, which has already ended for its readers.
            task = asyncio.get_running_loop().create_task(self._dispatch(turn, terminal))
            self._dispatches.add(task)
            task.add_done_callback(self._dispatches.discard)

    async def _dispatch(self, turn: Turn, done: Done) -> None:
        record = build_record(
            done,
            conversation_id=turn.plan.conversation_id,
            metadata=turn.plan.generation.metadata,
        )
        results = await self.router.dispatch(record)
        self._route_results[turn.stream_id] = [r.to_dict() for r in results]
        self._trim(self._route_results)

    async def routes_settled(self) -> None:
        """Wait until every dispatch to the router started so far has finished (each route
        has its own timeout, so this wait is bounded)."""
        while self._dispatches:
            await asyncio.gather(*list(self._dispatches), return_exceptions=True)

    def route_results(self, stream_id: str) -> list[dict[str, Any]] | None:
        """What each matching route of the system channel did with the turn's record (None
        while the routes still run, or when none matched it)."""
        return self._route_results.get(stream_id)

    def _plan(self, request: TurnRequest) -> TurnPlan:
        settings = self.settings
        route_name = request.route or settings.default_route
        route = settings.routes.get(route_name)
        if route is None:
            self.metrics.rejected.labels("unknown_route").inc()
            raise RequestError(
                "unknown_route",
                f"unknown route {route_name!r}; configured: {', '.join(sorted(settings.routes))}",
            )
        chain = tuple(self.providers[name] for name in route.providers)
        if request.script is not None:
            if not all(isinstance(p, ScriptedProvider) for p in chain):
                raise RequestError(
                    "invalid_request", "`script` is only accepted on a scripted route"
                )
            try:
                parse_script(request.script)
            except ValueError as exc:
                raise RequestError("invalid_request", str(exc)) from None
        limits = settings.limits
        max_tokens = request.max_tokens or route.max_tokens or limits.default_max_tokens
        if max_tokens > limits.max_tokens:
            raise RequestError(
                "invalid_request", f"max_tokens {max_tokens} is above the limit {limits.max_tokens}"
            )
        chat = request.chat()
        if len(chat) > limits.max_messages:
            raise RequestError(
                "invalid_request", f"{len(chat)} messages; the limit is {limits.max_messages}"
            )
        messages = [Message(m.role, m.content) for m in chat]
        if route.system_prompt:
            messages.insert(0, Message("system", route.system_prompt))
        extraction = self._extraction_plan(request, chain)
        if extraction is not None and extraction.strategy == "inline":
            # The answering call writes the block too: tell it how, after any system prompt.
            messages.insert(
                len([m for m in messages if m.role == "system"]),
                Message("system", inline_instructions(extraction.schema.json_schema)),
            )
        deadlines = settings.deadlines
        asked = request.deadlines or DeadlineOverrides()
        return TurnPlan(
            stream_id="tw_" + uuid.uuid4().hex,
            route=route_name,
            providers=chain,
            schedulers=tuple(self.schedulers.get(name) for name in route.providers),
            generation=GenerationRequest(
                messages=tuple(messages),
                max_tokens=max_tokens,
                temperature=request.temperature,
                stop=tuple(request.stop or ()),
                script=request.script,
                metadata=request.metadata,
            ),
            conversation_id=request.conversation_id,
            extraction=extraction,
            on_disconnect=request.on_disconnect,
            disconnect_grace_s=limits.disconnect_grace_s,
            background=request.background,
            first_token_s=_deadline(deadlines.first_token_s, asked.first_token_s),
            idle_s=_deadline(deadlines.idle_s, asked.idle_s),
            total_s=_deadline(deadlines.total_s, asked.total_s),
            coalesce_window_s=settings.coalesce.window_ms / 1000,
            coalesce_max_chars=settings.coalesce.max_chars,
            attempts_per_provider=settings.retry.attempts_per_provider,
            backoff_initial_s=settings.retry.backoff_initial_s,
            backoff_max_s=settings.retry.backoff_max_s,
        )


def _resolve_schema(registry: SchemaRegistry, spec: ExtractionSpec) -> ResolvedSchema:
    try:
        return registry.resolve(spec.json_schema)
    except (KeyError, ValueError) as exc:
        raise RequestError("invalid_request", f"extraction.schema: {exc}") from None


def _deadline(configured: float, asked: float | None) -> float:
    """Seconds; 0 in the config disables a deadline; a request may only tighten it."""
    limit = configured if configured > 0 else math.inf
    return min(limit, asked) if asked else limit


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
