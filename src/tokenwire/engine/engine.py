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
import dataclasses
import functools
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import ValidationError

from ..bus import EventLog, Follower, MemoryEventLog, UnknownStream, follow
from ..config import LocalProviderSettings, Settings
from ..context import (
    ContextSummary,
    ContextTooLong,
    CounterUnavailable,
    EstimateCounter,
    HistoryTurn,
    TokenCounter,
    context_window_for,
    counter_for,
    fit_context,
    summarize,
)
from ..output import (
    ExtractionSpec,
    ResolvedSchema,
    SchemaRegistry,
    choose_strategy,
    inline_instructions,
)
from ..protocol import Done, Error, Event, Reason, event_to_dict
from ..providers import GenerationRequest, Message, Provider, ToolCallRequest
from ..providers.registry import build_provider
from ..providers.scripted import ScriptedProvider, parse_script
from ..retrieval import Retriever, open_knowledge_base
from ..router import Router, RouterMetrics, build_record
from ..store import Store
from ..tools import ToolOutcome, ToolRegistry, builtin_registry, kb_search_tool, load_tool_modules
from ..tools import run_tool as run_tool_call
from .extraction import ExtractionPlan
from .hooks import Hooks
from .idempotency import IdempotencyTable, restarts
from .metrics import EngineMetrics
from .outbox import OutboxWorker
from .records import TurnRecorder
from .request import (
    DeadlineOverrides,
    Overloaded,
    RequestError,
    TurnRequest,
    validation_message,
)
from .routing import RouteChoice, RouteSelector
from .scheduler import ProviderScheduler
from .shares import TenantShares, tenant_share
from .turn import RetrievalPlan, Turn, TurnPlan

if TYPE_CHECKING:
    from ..cluster.gateway import Gateway

logger = logging.getLogger("tokenwire.engine")


@dataclass(frozen=True, slots=True)
class ActiveTurn:
    """A turn in flight, as ``GET /v1/streams?state=active`` lists it."""

    stream_id: str
    route: str
    model: str | None
    age_s: float
    tokens: int
    last_seq: int


class TurnControl(Protocol):
    """What a handle drives: a :class:`Turn` running here, or (on a scale-out gateway) a turn
    running on some worker, reached through Redis."""

    stream_id: str

    @property
    def route(self) -> str: ...

    @property
    def background(self) -> bool: ...

    @property
    def done(self) -> bool: ...

    @property
    def terminal(self) -> Done | Error | None: ...

    def attach(self) -> None: ...

    def detach(self, *, originator: bool) -> None: ...

    def stop(self, reason: Reason) -> bool: ...

    async def wait(self) -> Done | Error: ...


class TurnHandle:
    """A started turn: its id, its events (replayable from any seq) and its stop button."""

    def __init__(
        self,
        turn: TurnControl,
        log: EventLog,
        *,
        joined: bool = False,
        rejoin: Callable[[], None] | None = None,
    ) -> None:
        self._turn = turn
        self._log = log
        self._rejoin = rejoin
        self.stream_id = turn.stream_id
        self.route = turn.route
        self.joined = joined
        """True when ``submit`` found this turn by its idempotency key instead of starting it."""

    @property
    def originator(self) -> bool:
        """True when this handle's reader counts as the client that started the turn: pass it
        to :meth:`detach`. A retry by Idempotency-Key is the originator back (embedded mode)."""
        return not self.joined or self._rejoin is not None

    @property
    def background(self) -> bool:
        return self._turn.background

    @property
    def head(self) -> int:
        """The seq of the last event in the stream's log so far."""
        return self._log.head(self.stream_id)

    def attach(self) -> None:
        """Count a reader in (call :meth:`detach` when it leaves)."""
        self._turn.attach()
        if self._rejoin is not None:
            self._rejoin()

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
        return await self._turn.wait()


class Engine:
    """Runs turns on the configured providers. Use ``async with`` (or ``open``/``aclose``)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        providers: Mapping[str, Provider] | None = None,
        log: EventLog | None = None,
        router: Router | None = None,
        role: Literal["embedded", "gateway", "worker"] | None = None,
        tools: ToolRegistry | None = None,
        retriever: Retriever | None = None,
    ) -> None:
        """``role``: ``embedded`` runs everything in this process; ``gateway`` (the default
        when ``[redis] url`` is set) accepts and relays turns that workers run; ``worker`` runs
        turns taken from Redis (see :mod:`tokenwire.cluster`).

        ``tools``: the tools routes may name (default: the built-ins, if ``[tools] builtin``,
        and the ``@tool`` functions of ``[tools] modules``). ``retriever``: what routes with
        ``retrieval`` (and the ``kb_search`` tool) look passages up in (default: the built-in
        knowledge base at ``[retrieval] url``, else the store's database)."""
        self.settings = settings if settings is not None else Settings()
        self.role = role or ("gateway" if self.settings.redis.url else "embedded")
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
            max_stream_bytes=limits.max_stream_bytes,
            max_retained_bytes=limits.max_retained_bytes,
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
        self.router = (
            router
            if router is not None
            else Router.from_settings(
                self.settings.router, store_url=self.settings.store.url or None
            )
        )
        self.router.observe(RouterMetrics(self.metrics.registry).observe)
        self.route_selector = RouteSelector(self.settings)
        self.retriever: Retriever | None = retriever
        self._owns_retriever = False
        self.tools = tools if tools is not None else self._configured_tools()
        self._check_routes()
        self._dispatches: set[asyncio.Task[None]] = set()
        self._route_results: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._recent: OrderedDict[str, Turn] = OrderedDict()
        self._idempotent = IdempotencyTable(limits.max_retained_streams)
        self._turns: dict[str, Turn] = {}
        # A worker's turns were admitted by a gateway, shares included, cluster-wide.
        self.shares = TenantShares(None if self.role == "worker" else tenant_share(limits))
        """Turns in flight per tenant: one tenant cannot take every slot."""
        self._remembered: OrderedDict[str, str] = OrderedDict()
        self._summarizing: dict[str, asyncio.Task[None]] = {}
        self._counters: dict[str, TokenCounter] = {}
        self.gateway: Gateway | None = None
        self.may_record: Callable[[str], bool] | None = None
        """A worker's check that it still owns a turn before it writes the turn's record."""
        if self.role == "gateway":
            from ..cluster.gateway import Gateway

            self.gateway = Gateway(self)
            self.log = self.gateway.reader
        self._closing = False
        self._opened = False
        store = self.settings.store
        self.store: Store | None = Store(store.url) if store.url else None
        """Persistence (None when ``[store] url`` is empty: records live only in memory)."""
        self._recorder: TurnRecorder | None = None
        self._outbox: OutboxWorker | None = None
        if self.store is not None:
            self._recorder = TurnRecorder(
                self.store, write_timeout_s=store.write_timeout_s, metrics=self.metrics
            )
            self._outbox = OutboxWorker(
                self.store,
                self.router,
                metrics=self.metrics,
                poll_s=store.outbox_poll_s,
                lease_s=store.outbox_lease_s,
                max_attempts=store.outbox_max_attempts,
                backoff_initial_s=store.outbox_backoff_initial_s,
                backoff_max_s=store.outbox_backoff_max_s,
                results=self._route_results,
            )

    def _knowledge_base(self) -> Retriever:
        """The retriever routes use: the one given, else the built-in knowledge base."""
        if self.retriever is None:
            url = self.settings.retrieval.url or self.settings.store.url
            if not url:
                raise ValueError(
                    "a route uses retrieval, but there is no knowledge base: set [retrieval] "
                    "url (or [store] url, whose database holds it by default)"
                )
            self.retriever = open_knowledge_base(url)
            self._owns_retriever = True
        return self.retriever

    def _configured_tools(self) -> ToolRegistry:
        config = self.settings.tools
        registry = builtin_registry() if config.builtin else ToolRegistry()
        load_tool_modules(config.modules, registry)
        return registry

    def _check_routes(self) -> None:
        """Every tool a route names exists (``kb_search`` is the knowledge base's tool). A
        gateway runs no turns: its workers check their own."""
        if self.role == "gateway":
            return
        routes = self.settings.routes.values()
        if (
            self.settings.retrieval.kb_tool
            and "kb_search" not in self.tools
            and any("kb_search" in route.tools for route in routes)
        ):
            self.tools.register(kb_search_tool(self._knowledge_base()))
        for name, route in self.settings.routes.items():
            unknown = [t for t in route.tools if t not in self.tools]
            if unknown:
                known = ", ".join(self.tools.names) or "none"
                raise ValueError(
                    f"route {name!r} names unknown tools {', '.join(unknown)} (known: {known})"
                )

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store (migrating it, and marking the turns a previous process left running
        ``interrupted``), start the outbox, and get providers ready (load the local model
        unless ``preload = false``). Idempotent: an app's lifespan may open an engine its
        owner opened already."""
        if self._opened:
            return
        self._opened = True
        if self.gateway is not None:
            # A gateway runs no turns: no model, no outbox, nothing of its own to recover.
            if self.store is not None:
                await self.store.open()
            await self.gateway.open()
            return
        if self.store is not None:
            await self.store.open()
        if self.store is not None and self.role == "embedded":
            # Only a process that runs every turn may end the ones left running: a worker's
            # peers may be running theirs (a worker's lost turns are taken over instead).
            interrupted = await self.store.mark_interrupted()
            if interrupted:
                self.metrics.interrupted.inc(interrupted)
                logger.warning("marked %d turns of a previous run interrupted", interrupted)
        if self._outbox is not None:
            self._outbox.start()
        for name, provider in self.providers.items():
            cfg = self.settings.providers.get(name)
            if isinstance(cfg, LocalProviderSettings) and not cfg.preload:
                continue
            await provider.start()

    async def aclose(self) -> None:
        """Stop every turn in flight (reason ``shutdown``), wait for their terminal events, then
        release the providers."""
        self._closing = True
        if self.gateway is not None:
            await self.gateway.aclose()
        turns = list(self._turns.values())
        for turn in turns:
            turn.stop(Reason.SHUTDOWN)
        tasks = [t.task for t in turns if t.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        while self._dispatches:
            await asyncio.gather(*list(self._dispatches), return_exceptions=True)
        for task in list(self._summarizing.values()):
            task.cancel()
        await asyncio.gather(*self._summarizing.values(), return_exceptions=True)
        if self._outbox is not None:
            # Deliveries still due stay in the outbox: the next start delivers them.
            await self._outbox.aclose()
        if self._recorder is not None:
            await self._recorder.aclose()
        if self.store is not None:
            await self.store.aclose()
        await self.router.aclose()
        if self._owns_retriever and self.retriever is not None:
            with contextlib.suppress(Exception):
                await self.retriever.aclose()
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

    async def submit(
        self,
        request: TurnRequest | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        seen_seq: int = 0,
    ) -> TurnHandle:
        """Validate the request and start its turn. Raises :class:`RequestError` (the
        client's fault) or :class:`Overloaded` (try again later).

        ``tenant``: who asks (the API key's tenant; None without auth). Only the same tenant
        can later read, join or stop the turn. A request naming a ``conversation_id`` gets the
        conversation's history, fitted to the provider's context window; an unknown
        conversation (or another tenant's) is a :class:`RequestError` 404.

        With an ``idempotency_key`` seen before (within the retention of finished streams), the
        turn it started is returned instead (``handle.joined``): a retried POST joins its
        stream rather than starting a second generation, even when the retries race — unless
        that turn was stopped by its originator's drop (``client_gone``) and the retry saw
        nothing visible of it (``seen_seq``: the retry's ``Last-Event-ID``), which starts it
        afresh under the key (see ``engine.idempotency``). The same key with a different
        request is a :class:`RequestError` (``idempotency_conflict``)."""
        received_at = time.perf_counter()
        if not isinstance(request, TurnRequest):
            try:
                request = TurnRequest.model_validate(request)
            except ValidationError as exc:
                raise RequestError("invalid_request", validation_message(exc)) from None
        if self.gateway is not None:
            return await self.gateway.submit(
                request, tenant=tenant, idempotency_key=idempotency_key, seen_seq=seen_seq
            )
        if idempotency_key is None:
            turn = await self._start(request, tenant, received_at=received_at)
            return TurnHandle(turn, self.log)
        scoped = (tenant, idempotency_key)
        fingerprint = request.model_dump_json()
        while (known := self._idempotent.get(scoped)) is not None:
            if known.fingerprint != fingerprint:
                raise RequestError(
                    "idempotency_conflict",
                    "this Idempotency-Key was used with a different request",
                )
            # The first request may still be starting: wait for its turn (or its error).
            keyed = await asyncio.shield(known.turn)
            if self._idempotent.get(scoped) is not known:
                continue  # a racing retry started the key afresh meanwhile: join that one
            if not restarts(keyed, self.log, seen_seq):
                return TurnHandle(keyed, self.log, joined=True, rejoin=keyed.rejoin)
            break
        entry = self._idempotent.claim(scoped, fingerprint)
        try:
            turn = await self._start(request, tenant, received_at=received_at)
        except BaseException as exc:
            self._idempotent.failed(scoped, entry, exc)
            raise
        self._idempotent.started(entry, turn)
        return TurnHandle(turn, self.log)

    async def _start(
        self,
        request: TurnRequest,
        tenant: str | None,
        *,
        stream_id: str | None = None,
        prior: Sequence[Event] = (),
        received_at: float | None = None,
    ) -> Turn:
        received_at = received_at if received_at is not None else time.perf_counter()
        self._admit(tenant)
        routed_at = time.perf_counter()
        try:
            choice = self.route_selector.choose(request, tenant)
        except RequestError as exc:
            self.metrics.rejected.labels(exc.code).inc()
            raise
        planned_at = time.perf_counter()
        plan = self._plan(request, tenant, choice, stream_id=stream_id)
        if request.conversation_id is not None and self.store is not None:
            plan = await self._with_history(plan, request)
            self._admit(tenant)  # the world may have changed while the history loaded
        self.metrics.route_choices.labels(
            choice.route, choice.tier, choice.rule or ("request" if request.route else "default")
        ).inc()
        done_at = time.perf_counter()
        # precheck: validation, admission, the plan and the history; route: the rules.
        stages = {
            "precheck": round((done_at - received_at - (planned_at - routed_at)) * 1000, 3),
            "route": round((planned_at - routed_at) * 1000, 3),
        }
        plan = dataclasses.replace(plan, stages=stages, received_at=received_at)
        recorder = self._recorder
        turn = Turn(
            plan,
            log=self.log,
            hooks=self.hooks,
            metrics=self.metrics,
            persist=None if recorder is None else lambda t: self._persist(turn, t),
            recorded=None if recorder is None else lambda: recorder.started(plan.stream_id),
            prior=prior,
        )
        self.log.open(plan.stream_id)
        self._turns[plan.stream_id] = turn
        self.shares.add(tenant)
        self.metrics.active_streams.inc()
        if recorder is not None:
            recorder.start(plan.stream_id, _started(turn))
        turn.task = asyncio.get_running_loop().create_task(
            self._drive(turn), name=f"tokenwire-turn-{plan.stream_id}"
        )
        return turn

    async def start_job(
        self,
        request: Mapping[str, Any],
        *,
        tenant: str | None,
        stream_id: str,
        prior: Sequence[Event] = (),
    ) -> TurnHandle:
        """A worker's start of a turn a gateway accepted: the stream id is the gateway's, and
        ``prior`` the events a lost worker already wrote (``start``, ``status``), after which
        this run continues. Raises :class:`RequestError` like :meth:`submit`."""
        try:
            validated = TurnRequest.model_validate(request)
        except ValidationError as exc:
            raise RequestError("invalid_request", validation_message(exc)) from None
        turn = await self._start(
            validated, tenant, stream_id=stream_id, prior=prior, received_at=time.perf_counter()
        )
        return TurnHandle(turn, self.log)

    async def lookup(self, stream_id: str, *, tenant: str | None = None) -> TurnHandle:
        """:meth:`handle`, wherever the turn runs: on a gateway, any turn of the cluster."""
        if self.gateway is not None:
            return await self.gateway.lookup(stream_id, tenant=tenant)
        return self.handle(stream_id, tenant=tenant)

    async def stop(
        self, stream_id: str, reason: Reason = Reason.CANCELLED, *, tenant: str | None = None
    ) -> bool:
        """:meth:`cancel`, wherever the turn runs: on a gateway, the signal goes through Redis
        to the worker running it."""
        if self.gateway is not None:
            return await self.gateway.cancel(stream_id, reason, tenant=tenant)
        return self.cancel(stream_id, reason, tenant=tenant)

    async def remember(self, key: str, value: str) -> None:
        """Keep a small value (an endpoint's pointer to a stream) for as long as finished
        streams are kept: in this process, or on a gateway in Redis, so every gateway sees it."""
        if self.gateway is not None:
            await self.gateway.remember(key, value)
            return
        self._remembered[key] = value
        self._remembered.move_to_end(key)
        self._trim(self._remembered)

    async def recall(self, key: str) -> str | None:
        """What :meth:`remember` kept under ``key`` (None: nothing, or it expired)."""
        if self.gateway is not None:
            return await self.gateway.recall(key)
        return self._remembered.get(key)

    async def list_active(self, *, tenant: str | None = None) -> list[ActiveTurn]:
        """:meth:`active`, wherever the turns run: on a gateway, every worker's."""
        if self.gateway is not None:
            return await self.gateway.active(tenant=tenant)
        return self.active(tenant=tenant)

    def _admit(self, tenant: str | None) -> None:
        if self._closing:
            raise Overloaded("the server is shutting down", retry_after_s=5)
        if len(self._turns) >= self.settings.limits.max_active_turns:
            self.metrics.rejected.labels("overloaded").inc()
            raise Overloaded(f"{len(self._turns)} turns in flight; the limit is reached")
        if self.shares.full(tenant):
            self.metrics.rejected.labels("overloaded").inc()
            raise Overloaded(
                f"this tenant has {self.shares.in_flight(tenant)} turns in flight; its share "
                "is reached"
            )

    async def run(
        self, request: TurnRequest | Mapping[str, Any], *, tenant: str | None = None
    ) -> AsyncIterator[Event]:
        """Start a turn and yield its events through the terminal one. Leaving the loop early
        (``break``, an exception, closing the generator) stops the turn (``client_gone``)."""
        handle = await self.submit(request, tenant=tenant)
        handle.attach()
        try:
            async for event in handle.events():
                yield event
        finally:
            handle.detach(originator=True)

    def handle(self, stream_id: str, *, tenant: str | None = None) -> TurnHandle:
        """The handle of a turn in flight or recently finished (its events still held).
        Raises :class:`UnknownStream`, also for another tenant's turn (indistinguishable)."""
        turn = self._owned(stream_id, tenant)
        self.log.head(stream_id)  # raises UnknownStream once its events have expired
        return TurnHandle(turn, self.log)

    def _owned(self, stream_id: str, tenant: str | None) -> Turn:
        turn = self._turns.get(stream_id) or self._recent.get(stream_id)
        if turn is None or turn.plan.tenant != tenant:
            raise UnknownStream(stream_id)
        return turn

    def _trim(self, table: OrderedDict[Any, Any]) -> None:
        while len(table) > self.settings.limits.max_retained_streams:
            table.popitem(last=False)

    def cancel(
        self, stream_id: str, reason: Reason = Reason.CANCELLED, *, tenant: str | None = None
    ) -> bool:
        """Stop a turn in flight. False when it has already ended; :class:`UnknownStream` when
        no such stream is held (or it is another tenant's)."""
        turn = self._owned(stream_id, tenant)
        return turn.stop(reason)

    def active(self, *, tenant: str | None = None) -> list[ActiveTurn]:
        """The tenant's turns in flight, oldest first."""
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
            if t.plan.tenant == tenant
        ]

    async def status(self, stream_id: str, *, tenant: str | None = None) -> dict[str, Any]:
        """What ``GET /v1/streams/{id}`` returns: the live view of a turn in flight, the
        terminal event of one that finished recently, or its stored record (``record``) once
        its events have expired. Raises :class:`UnknownStream` (also for another tenant's)."""
        if self.gateway is not None:
            found = await self.gateway.status(stream_id, tenant=tenant)
            if found is not None:
                return found
            return await self._stored_status(stream_id, tenant)
        try:
            self._owned(stream_id, tenant)
            terminal = self.log.terminal(stream_id)
        except UnknownStream:
            return await self._stored_status(stream_id, tenant)
        turn = self._turns.get(stream_id)
        if turn is not None:
            return {
                "stream_id": stream_id,
                "state": "active",
                "route": turn.plan.route,
                "tier": turn.tier,
                "model": turn.model,
                "created_at": turn.created_at,
                "age_s": round(turn.age_s, 3),
                "tokens": turn.tokens,
                "last_seq": turn.lifecycle.seq,
            }
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

    async def _stored_status(self, stream_id: str, tenant: str | None) -> dict[str, Any]:
        record = None
        if self.store is not None and len(stream_id) <= 64:
            record = await self.store.get_turn(stream_id, tenant=tenant)
        if record is None:
            raise UnknownStream(stream_id)
        if record["finished_at"] is None:
            state = "active"  # running in another process that shares the store
        elif record["status"] == "failed":
            state = "failed"
        else:
            state = "incomplete" if record["partial"] else "completed"
        return {
            "stream_id": stream_id,
            "state": state,
            "routes": record.pop("route_results") or None,
            "terminal": record.get("terminal"),
            "record": record,
        }

    def _tool_runner(self) -> Callable[[ToolCallRequest], Awaitable[ToolOutcome]]:
        config = self.settings.tools
        return functools.partial(
            run_tool_call,
            self.tools,
            timeout_s=config.timeout_s,
            max_chars=config.max_result_chars,
        )

    def _extraction_plan(
        self,
        request: TurnRequest,
        chain: tuple[Provider, ...],
        route_default: Mapping[str, Any] | None = None,
    ) -> ExtractionPlan | None:
        asked = request.extraction if request.extraction is not None else route_default
        if asked is None:
            return None
        try:
            spec = ExtractionSpec.model_validate(asked)
        except ValidationError as exc:
            raise RequestError(
                "invalid_request", "extraction: " + validation_message(exc)
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
            late = turn.abandon(Reason.SHUTDOWN)
            if self._turns.pop(turn.stream_id, None) is not None:
                self.shares.remove(turn.plan.tenant)
            self._recent[turn.stream_id] = turn
            self._trim(self._recent)
            self.metrics.active_streams.dec()
            if late is not None:
                # Published before its record (the turn never ran): write the record now.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._persist(turn, late))
        terminal = turn.terminal
        if turn.plan.context is not None and isinstance(terminal, Done):
            self._summarize_later(turn)
        if self.store is None and isinstance(terminal, Done) and self.router.routes:
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

    async def _with_history(self, plan: TurnPlan, request: TurnRequest) -> TurnPlan:
        """The plan with the conversation's history in its prompt, fitted to the context
        window of the route's providers (the smallest, since any may answer), counted with
        the first provider's tokenizer."""
        assert self.store is not None and request.conversation_id is not None
        conversation_id = request.conversation_id
        stored = None
        if len(conversation_id) <= 64:
            stored = await self.store.conversation_context(
                conversation_id,
                tenant=plan.tenant,
                max_turns=self.settings.context.max_history_turns,
            )
        if stored is None:
            raise RequestError(
                "conversation_not_found", f"no conversation {conversation_id!r}", status=404
            )
        history = [_history_turn(t) for t in stored["turns"]]
        summary = None
        if stored["summary"]:
            summary = ContextSummary(text=stored["summary"], covers=tuple(stored["summary_covers"]))
        messages = plan.generation.messages
        window = min(self._window(p) for p in plan.providers)
        try:
            # In a thread: counting a long history with a real tokenizer takes milliseconds,
            # and loading a tiktoken encoding the first time, most of a second.
            fitted = await asyncio.to_thread(
                fit_context,
                [m for m in messages if m.role == "system"],
                history,
                [m for m in messages if m.role != "system"],
                counter=self._counter(plan.providers[0]),
                window=window,
                # As the local provider does: an answer never takes more than half the window.
                reserve_output=min(plan.generation.max_tokens, window // 2),
                summary=summary,
            )
        except ContextTooLong as exc:
            raise RequestError("context_too_long", str(exc), status=400) from None
        if fitted.dropped:
            self.metrics.context_trimmed.inc(len(fitted.dropped))
        return dataclasses.replace(
            plan,
            generation=dataclasses.replace(plan.generation, messages=fitted.messages),
            context=fitted.report,
        )

    def _window(self, provider: Provider) -> int:
        """The provider's context window: configured (``context_window``), else known."""
        configured = getattr(self.settings.providers.get(provider.name), "context_window", None)
        return int(configured) if configured else context_window_for(provider)

    async def summaries_settled(self) -> None:
        """Wait for the background summaries started so far (each bounded by its timeout)."""
        while self._summarizing:
            await asyncio.gather(*list(self._summarizing.values()), return_exceptions=True)

    def _counter(self, provider: Provider) -> TokenCounter:
        """The provider's token counter (made once), or the estimate while it cannot count
        (a local model not loaded yet)."""
        counter = self._counters.get(provider.name)
        if counter is None:
            try:
                counter = counter_for(provider)
            except CounterUnavailable:
                return EstimateCounter()
            self._counters[provider.name] = counter
        return counter

    def _summarize_later(self, turn: Turn) -> None:
        """After a conversation turn that left out history its summary does not cover yet:
        summarise those turns (rolling the old summary in) with a background-priority call,
        so the next turns keep their gist. Never in the way of an interactive turn."""
        report = turn.plan.context
        conversation_id = turn.plan.conversation_id
        if report is None or conversation_id is None or self.store is None:
            return
        if not report["dropped"] or set(report["dropped"]) <= set(report["summarized"]):
            return
        if not self._summaries_enabled(turn.plan.providers[0]):
            return
        if conversation_id in self._summarizing:
            return  # one at a time per conversation; the next turn starts another if needed
        task = asyncio.get_running_loop().create_task(
            self._summarize(conversation_id, turn.plan, list(report["dropped"]))
        )
        self._summarizing[conversation_id] = task

        def forget(_task: asyncio.Task[None]) -> None:
            self._summarizing.pop(conversation_id, None)

        task.add_done_callback(forget)

    def _summaries_enabled(self, provider: Provider) -> bool:
        mode = self.settings.context.summarize
        # "auto": a base model such as the local Gemma 270M writes summaries that drop or
        # invent facts; leaving turns out is the honest choice there.
        return mode == "always" or (mode == "auto" and provider.kind != "local")

    async def _summarize(self, conversation_id: str, plan: TurnPlan, dropped: list[str]) -> None:
        assert self.store is not None
        settings = self.settings.context
        try:
            stored = await self.store.conversation_context(
                conversation_id, tenant=plan.tenant, max_turns=settings.max_history_turns
            )
            if stored is None:
                return
            previous = None
            if stored["summary"]:
                previous = ContextSummary(stored["summary"], tuple(stored["summary_covers"]))
            covered = set(previous.covers) if previous is not None else set()
            wanted = set(dropped) - covered
            turns = [_history_turn(t) for t in stored["turns"] if t["stream_id"] in wanted]
            if not turns:
                return
            summary = await summarize(
                plan.providers[0],
                plan.schedulers[0] if plan.schedulers else None,
                turns,
                max_tokens=settings.summary_max_tokens,
                timeout_s=settings.summary_timeout_s,
                previous=previous,
                script=plan.generation.script,
            )
            await self.store.set_summary(conversation_id, summary.text, list(summary.covers))
            self.metrics.summaries.labels("ok").inc()
        except Exception as exc:
            self.metrics.summaries.labels("error").inc()
            logger.warning("summarising conversation %s failed: %r", conversation_id, exc)

    async def _persist(self, turn: Turn, terminal: Done | Error) -> None:
        """Write the turn's record and queue its system-channel deliveries, in one transaction
        (see ``engine.records``); the turn publishes its terminal event after this."""
        if self.may_record is not None and not self.may_record(turn.stream_id):
            return  # a worker that lost its claim: the turn's new owner writes the record
        await self.record_terminal(
            turn.stream_id,
            terminal,
            started=_started(turn),
            conversation_id=turn.plan.conversation_id,
            metadata=turn.plan.generation.metadata,
        )

    async def record_terminal(
        self,
        stream_id: str,
        terminal: Done | Error,
        *,
        started: dict[str, Any],
        conversation_id: str | None,
        metadata: Mapping[str, Any],
    ) -> None:
        """Write a turn's final record and queue its deliveries (also for a turn that ended
        elsewhere: a worker ending a lost worker's turn)."""
        recorder, outbox = self._recorder, self._outbox
        if recorder is None or outbox is None:
            return
        deliveries: list[tuple[str, dict[str, Any]]] = []
        if isinstance(terminal, Done) and self.router.routes:
            record = build_record(terminal, conversation_id=conversation_id, metadata=metadata)
            matched, failed = self.router.matching(record)
            deliveries = [(name, record) for name in matched]
            if failed:
                self._route_results[stream_id] = [
                    r.to_dict() for r in await asyncio.gather(*failed)
                ]
        written = await recorder.finish(
            stream_id,
            event_to_dict(terminal),
            started=started,
            deliveries=deliveries,
        )
        if written and deliveries:
            outbox.queued(stream_id, [name for name, _ in deliveries])

    async def routes_settled(self) -> None:
        """Wait until every dispatch to the router started so far has finished (each route
        has its own timeout, so this wait is bounded). With a store: until every delivery
        queued in the outbox so far has been attempted once (retries come later)."""
        while self._dispatches:
            await asyncio.gather(*list(self._dispatches), return_exceptions=True)
        if self._outbox is not None:
            await self._outbox.first_attempts()

    def route_results(self, stream_id: str) -> list[dict[str, Any]] | None:
        """What each matching route of the system channel did with the turn's record (None
        while the routes still run, or when none matched it)."""
        return self._route_results.get(stream_id)

    def _plan(
        self,
        request: TurnRequest,
        tenant: str | None,
        choice: RouteChoice,
        *,
        stream_id: str | None = None,
    ) -> TurnPlan:
        settings = self.settings
        route_name, route = choice.route, choice.settings
        tiered = route.chain(choice.tier)
        chain = tuple(self.providers[name] for _, name in tiered)
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
        extraction = self._extraction_plan(request, chain, route.extraction)
        if extraction is not None and extraction.strategy == "inline":
            # The answering call writes the block too: tell it how, after any system prompt.
            messages.insert(
                len([m for m in messages if m.role == "system"]),
                Message("system", inline_instructions(extraction.schema.json_schema)),
            )
        deadlines = settings.deadlines
        asked = request.deadlines or DeadlineOverrides()
        return TurnPlan(
            # 128 random bits: unguessable. A worker runs the turn under its gateway's id.
            stream_id=stream_id or "tw_" + secrets.token_hex(16),
            tenant=tenant,
            request=request.model_dump(mode="json", exclude_none=True),
            route=route_name,
            tier=choice.tier,
            tiers=tuple(tier for tier, _ in tiered),
            providers=chain,
            schedulers=tuple(self.schedulers.get(name) for _, name in tiered),
            tools=self.tools.specs(route.tools),
            run_tool=self._tool_runner() if route.tools else None,
            tool_choice=route.tool_choice,
            max_tool_steps=route.max_tool_steps,
            retrieval=(
                RetrievalPlan(
                    retriever=self._knowledge_base(),
                    top_k=route.retrieval.top_k,
                    max_chars=route.retrieval.max_chars,
                    min_score=route.retrieval.min_score,
                    timeout_s=route.retrieval.timeout_s,
                )
                if route.retrieval is not None
                else None
            ),
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


def _history_turn(stored: Mapping[str, Any]) -> HistoryTurn:
    """A stored turn as history: what the client said, then the canonical answer."""
    return HistoryTurn(
        stream_id=stored["stream_id"],
        messages=(*_asked(stored["request"]), Message("assistant", stored["answer"])),
    )


def _asked(request: Mapping[str, Any]) -> tuple[Message, ...]:
    """What the client said in a stored turn (its non-system messages, or its prompt)."""
    if request.get("prompt") is not None:
        return (Message("user", str(request["prompt"])),)
    return tuple(
        Message(m["role"], str(m["content"]))
        for m in request.get("messages") or ()
        if m.get("role") in ("user", "assistant", "tool")
    )


def _started(turn: Turn) -> dict[str, Any]:
    """The ``start_turn`` arguments of a turn (its stored running row)."""
    plan = turn.plan
    return {
        "conversation_id": plan.conversation_id,
        "request": plan.request,
        "route": plan.route,
        "model": turn.model,
        "tenant": plan.tenant,
    }


def _resolve_schema(registry: SchemaRegistry, spec: ExtractionSpec) -> ResolvedSchema:
    try:
        return registry.resolve(spec.json_schema)
    except (KeyError, ValueError) as exc:
        raise RequestError("invalid_request", f"extraction.schema: {exc}") from None


def _deadline(configured: float, asked: float | None) -> float:
    """Seconds; 0 in the config disables a deadline; a request may only tighten it."""
    limit = configured if configured > 0 else math.inf
    return min(limit, asked) if asked else limit
