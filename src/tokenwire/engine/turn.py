"""One running turn: start → generate (retries, fallback, deadlines) → post-process → terminal.

The turn is the only writer of its stream. Every event goes through its
:class:`~tokenwire.protocol.TurnLifecycle` (which numbers it and refuses anything illegal), then
into the event log, then to the hooks. Whatever happens (an upstream failure, a deadline, a
cancel, a bug) :meth:`Turn.run` ends by appending exactly one terminal event.

Cancellation is task cancellation: :meth:`Turn.stop` records why and cancels the turn's task;
the ``CancelledError`` lands in the provider's await, whose cleanup closes the upstream
connection or stops the model thread. Deadlines use the same path through ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..bus import EventLog
from ..protocol import (
    Done,
    Error,
    Event,
    LocalProtocolError,
    Phase,
    Reason,
    Start,
    Status,
    TextDone,
    ToolCall,
    ToolResult,
    TurnLifecycle,
    Usage,
)
from ..protocol.retry import backoff_delay
from ..providers import (
    Begin,
    Finish,
    GenerationRequest,
    Message,
    Provider,
    ProviderError,
    SourceChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    ToolSpec,
    UsageChunk,
)
from ..retrieval import Passage, Retriever
from ..tools import ToolOutcome
from .coalesce import Coalescer
from .extraction import ExtractionPlan, Extractor, with_answer_hash
from .hooks import Hooks
from .metrics import EngineMetrics
from .passages import context_message, ordered_sources, select
from .postprocess import canonical_answer, cited_numbers
from .scheduler import Priority, ProviderScheduler
from .sources import SourceCollector, structured_sources, urls_in_text

logger = logging.getLogger("tokenwire.turn")

_FINISH_REASONS = {
    "stop": Reason.STOP,
    "tool_calls": Reason.STOP,
    "length": Reason.LENGTH,
    "content_filter": Reason.CONTENT_FILTER,
}


@dataclass(frozen=True, slots=True)
class RetrievalPlan:
    """A route's look-up before generation (``[routes.X.retrieval]``)."""

    retriever: Retriever
    top_k: int = 4
    max_chars: int = 3000
    min_score: float | None = None
    timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """Everything a turn needs, resolved from the request and the settings before it starts."""

    stream_id: str
    route: str
    providers: tuple[Provider, ...]
    generation: GenerationRequest
    schedulers: tuple[ProviderScheduler | None, ...] = ()
    """One per provider (None: unscheduled); empty: none at all."""
    extraction: ExtractionPlan | None = None
    tier: str = "default"
    """The model tier chosen for the turn (``start.tier``)."""
    tiers: tuple[str, ...] = ()
    """The tier of each provider in ``providers`` (empty: all of ``tier``)."""
    tools: tuple[ToolSpec, ...] = ()
    """Tools the model may call; the turn runs them with ``run_tool``."""
    run_tool: Callable[[ToolCallRequest], Awaitable[ToolOutcome]] | None = None
    tool_choice: Literal["auto", "required"] = "auto"
    max_tool_steps: int = 4
    retrieval: RetrievalPlan | None = None
    stages: dict[str, float] = field(default_factory=dict)
    """Milliseconds of the stages before the turn existed (precheck, route)."""
    received_at: float | None = None
    """``time.perf_counter()`` when the request arrived: ``timings.total`` counts from it."""
    on_disconnect: str = "cancel"
    """What the departure of the client that started the turn does: ``cancel`` stops it now;
    ``continue`` keeps it running ``disconnect_grace_s`` for a reader to come back."""
    disconnect_grace_s: float = 30.0
    background: bool = False
    """Runs to its end whatever readers do (``POST /v1/streams`` with ``background: true``)."""
    conversation_id: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    """The request as the client sent it (JSON-ready), for the turn's stored record."""
    tenant: str | None = None
    """The API key's tenant that started the turn: only it may read, join or stop it."""
    context: dict[str, Any] | None = None
    """What fitting the conversation's history did (``done.context``); None without one."""
    first_token_s: float = math.inf
    idle_s: float = math.inf
    total_s: float = math.inf
    coalesce_window_s: float = 0.015
    coalesce_max_chars: int = 8192
    attempts_per_provider: int = 2
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 4.0


@dataclass(slots=True)
class _Outcome:
    reason: Reason
    message: str = ""
    retryable: bool = False
    model: str | None = None
    retry_after: float | None = None
    """Seconds the upstream asked us to wait before trying again (``Retry-After``)."""
    code: str | None = None
    """The upstream failure's cause (``upstream_rate_limited``, ...): ``error.code``."""


@dataclass(slots=True)
class _ToolCallParts:
    call_id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)


class Turn:
    """Drives one turn. Create it, then run :meth:`run` as a task; :meth:`stop` ends it early."""

    def __init__(
        self,
        plan: TurnPlan,
        *,
        log: EventLog,
        hooks: Hooks,
        metrics: EngineMetrics,
        persist: Callable[[Done | Error], Awaitable[None]] | None = None,
        recorded: Callable[[], Awaitable[None]] | None = None,
        prior: Sequence[Event] = (),
    ) -> None:
        """``prior``: the events another worker already wrote for this stream before it was
        lost (``start`` and ``status`` only: nothing visible). The turn continues after them,
        so a re-run reads as one stream: no second ``start``, ``seq`` without a gap."""
        self.plan = plan
        self._persist = persist
        self._recorded = recorded
        """Awaited before the first visible output: the turn's running row is written."""
        self._held: Done | Error | None = None
        self.stream_id = plan.stream_id
        self.lifecycle = TurnLifecycle(plan.stream_id)
        for event in prior:
            self.lifecycle.send(event)
        self._resumed = bool(prior)
        self.created_at = time.time()
        self.tokens = 0
        self.attempts = 0
        self.scheduler_wait_s = 0.0
        self.model: str | None = plan.providers[0].model if plan.providers else None
        self.terminal: Done | Error | None = None
        self.task: asyncio.Task[None] | None = None
        self._log = log
        self._hooks = hooks
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        # Deadlines and coalescing run on the loop's clock (timers need it); timings use
        # perf_counter, since uvloop's clock has only millisecond resolution.
        self._t0 = self._loop.time()
        self._p0 = plan.received_at if plan.received_at is not None else time.perf_counter()
        self._begin_at: float | None = None
        self._first_at: float | None = None
        self._last_content_at = 0.0
        self._stream_end_at: float | None = None
        self._content_seen = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._stop_reason: Reason | None = None
        self._running = False
        self.readers = 0
        self._originators = 1
        """Readers whose departure applies ``on_disconnect``: the client that started the turn,
        plus each retry of it by its Idempotency-Key (:meth:`rejoin`)."""
        self._grace: asyncio.TimerHandle | None = None
        self._usage: UsageChunk | None = None
        self._earlier_usage: UsageChunk | None = None
        """What the tool loop's earlier model calls used (``done.usage`` is the turn's sum)."""
        self._tool_calls: dict[int, _ToolCallParts] = {}
        self._messages: tuple[Message, ...] = plan.generation.messages
        self._passages: list[Passage] = []
        self._found_sources: list[SourceChunk] = []
        """Sources of tool results and of the provider attempts that answered, in order."""
        self._attempt_sources: list[SourceChunk] = []
        self._attempt_text = False
        self._tools_with_results: dict[str, None] = {}
        self._tool_runs: dict[str, int] = {}
        self._in_tools = False
        self._stage_ms: dict[str, float] = dict(plan.stages)
        self.tier = plan.tier
        self._coalescer = Coalescer(plan.coalesce_window_s, plan.coalesce_max_chars)
        self._flush_handle: asyncio.TimerHandle | None = None
        self._text_closed = False
        self._inline = plan.extraction is not None and plan.extraction.strategy == "inline"
        self._extracting = False
        self._extract_ms: float | None = None
        self._parallel: asyncio.Task[dict[str, object]] | None = None
        self.extractor: Extractor | None = None
        if plan.extraction is not None:
            users = [m.content for m in plan.generation.messages if m.role == "user"]
            self.extractor = Extractor(
                plan.extraction,
                emit=self._emit_structured,
                providers=plan.providers,
                schedulers=plan.schedulers or (None,) * len(plan.providers),
                user_message=users[-1] if users else "",
                base=plan.generation,
                metrics=metrics,
            )
        self._first_token_at = self._t0 + plan.first_token_s
        self._total_at = self._t0 + plan.total_s

    # -- control ---------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.terminal is not None

    @property
    def route(self) -> str:
        return self.plan.route

    @property
    def background(self) -> bool:
        return self.plan.background

    async def wait(self) -> Done | Error:
        """The terminal event, once the turn has ended."""
        if self.task is not None:
            await asyncio.shield(self.task)
        assert self.terminal is not None, "a finished turn always has its terminal event"
        return self.terminal

    @property
    def age_s(self) -> float:
        return self._loop.time() - self._t0

    def stop(self, reason: Reason) -> bool:
        """End the turn early (cancel, client gone, shutdown). False if it already ended."""
        if self.terminal is not None or self.task is None or self.task.done():
            return False
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._running:
            self.task.cancel()
        # else: run() has not begun; it sees the stop reason before calling any provider.
        return True

    @property
    def stop_reason(self) -> Reason | None:
        """Why :meth:`stop` ended the turn (set at once, before its terminal event)."""
        return self._stop_reason

    def attach(self) -> None:
        """A reader starts following the stream (a resume or a join counts)."""
        self.readers += 1

    def rejoin(self) -> None:
        """The originator is back (a retry by its Idempotency-Key): until that reader detaches
        as originator too, the first connection's departure does not apply ``on_disconnect``."""
        self._originators += 1

    def detach(self, *, originator: bool) -> None:
        """A reader left. If it was the client that started the turn and the turn is still
        running, apply the request's ``on_disconnect`` policy; other readers (viewers) leaving
        never stop a turn, nor does anyone leaving a background turn."""
        self.readers = max(0, self.readers - 1)
        if not originator or self.plan.background or self.terminal is not None:
            return
        self._originators -= 1
        if self._originators > 0:
            return  # the same client still reads it through a retry of its request
        if self.plan.on_disconnect == "continue":
            if self._grace is None:
                self._grace = self._loop.call_later(
                    self.plan.disconnect_grace_s, self._grace_expired
                )
            return
        self.stop(Reason.CLIENT_GONE)

    def _grace_expired(self) -> None:
        self._grace = None
        if self.readers == 0:
            self.stop(Reason.CLIENT_GONE)

    def abandon(self, reason: Reason) -> Done | Error | None:
        """End the stream now, synchronously, if :meth:`run` could not (its task was cancelled
        before it started). Keeps the promise of one terminal event per stream.

        Returns the terminal event if it had to publish it before its record was written (the
        caller then writes the record), else None."""
        if self.terminal is None and not self.lifecycle.closed:
            if self.lifecycle.state.value == "idle":
                self._emit_start()
            self._finish(_Outcome(self._stop_reason or reason, "stopped"))
        held, self._held = self._held, None
        if held is not None:
            self._publish(held)
        return held

    def _emit_start(self) -> None:
        self._emit(
            Start(
                conversation_id=self.plan.conversation_id,
                model=self.model or "",
                route=self.plan.route,
                created_at=self.created_at,
                tier=self.plan.tier,
            )
        )

    # -- the turn --------------------------------------------------------------------------

    async def run(self) -> None:
        """Run to the end. Never raises (a bug is logged and ends the turn honestly)."""
        outcome: _Outcome
        self._running = True
        try:
            if not self._resumed:
                self._emit_start()
                self._emit(Status(phase=Phase.QUEUED))
            self._watch()
            if self._stop_reason is not None:
                outcome = _Outcome(self._stop_reason, "stopped before it started")
            else:
                if self.plan.retrieval is not None:
                    await self._retrieve(self.plan.retrieval)
                if self.extractor is not None and self.extractor.plan.strategy == "parallel":
                    self._parallel = self._loop.create_task(self.extractor.run(None))
                outcome = await self._generate()
                if self.extractor is not None:
                    await self._extract(outcome)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            reason = self._stop_reason or Reason.SHUTDOWN
            outcome = _Outcome(
                reason,
                _DEADLINE_MESSAGES.get(reason, "stopped"),
                retryable=not reason.is_stop_request,
            )
        except Exception as exc:
            logger.exception("turn %s failed inside tokenwire", self.stream_id)
            outcome = _Outcome(Reason.UPSTREAM_ERROR, f"internal error: {type(exc).__name__}")
        self._finish(outcome)
        await self._release()

    async def _release(self) -> None:
        """Publish the terminal event once its record is written (see ``engine.records``)."""
        held, self._held = self._held, None
        if held is None:
            return
        assert self._persist is not None
        started = time.perf_counter()
        write = asyncio.ensure_future(self._persist(held))
        try:
            # Shielded: a cancel arriving now must not tear the write in half; the recorder
            # bounds its own wait.
            await asyncio.shield(write)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception:
            logger.exception("turn %s: writing its record failed", self.stream_id)
        # The event tells how long its own record took to write (the record cannot).
        now = time.perf_counter()
        persist_s = now - started
        self._metrics.stages.labels("persist").observe(persist_s)
        timings = {**held.timings, "persist": _ms(persist_s), "total": _ms(now - self._p0)}
        held = dataclasses.replace(held, timings=timings)
        if self.terminal is not None:
            self.terminal = held
        self._publish(held)

    async def _retrieve(self, retrieval: RetrievalPlan) -> None:
        """Look the last user message up; the passages found go into the prompt. A failing or
        slow knowledge base costs the answer its passages, never the turn."""
        self._emit(Status(phase=Phase.RETRIEVING))
        users = [m.content for m in self._messages if m.role == "user"]
        started = time.perf_counter()
        found: list[Passage] = []
        try:
            async with asyncio.timeout(retrieval.timeout_s):
                found = await retrieval.retriever.search(
                    users[-1] if users else "", limit=retrieval.top_k
                )
            outcome = "hits" if found else "none"
        except Exception as exc:
            logger.warning("turn %s: retrieval failed: %s", self.stream_id, exc)
            outcome = "error"
        self._stage_ms["retrieval"] = _ms(time.perf_counter() - started)
        self._metrics.retrievals.labels(outcome).inc()
        self._passages = select(found, max_chars=retrieval.max_chars, min_score=retrieval.min_score)
        if self._passages:
            # After the route's own system messages, before the conversation.
            messages = list(self._messages)
            at = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
            messages.insert(at, context_message(self._passages, max_chars=retrieval.max_chars))
            self._messages = tuple(messages)

    async def _generate(self) -> _Outcome:
        """The tool loop: call the model; while it calls tools (and steps remain), run them,
        give it their results and call it again. Each call retries and falls back on its own
        (a retry never repeats a tool that ran: its result is in the request)."""
        plan = self.plan
        messages = list(self._messages)
        start = 0
        step = 1
        while True:
            offered = plan.tools if step < plan.max_tool_steps else ()
            request = dataclasses.replace(
                plan.generation,
                messages=tuple(messages),
                tools=offered,
                tool_choice=plan.tool_choice if step == 1 else "auto",
                step=step,
            )
            text_mark = len(self.lifecycle.streamed_text)
            outcome, start = await self._call_chain(request, start)
            calls = self._take_tool_calls(outcome)
            if not calls or not plan.tools:
                return outcome  # no calls, or calls the application runs itself
            if not offered:
                for call in calls:
                    self._emit(
                        ToolResult(
                            call_id=call.call_id,
                            ok=False,
                            summary=f"not run: the turn's {plan.max_tool_steps} steps are used up",
                        )
                    )
                return _Outcome(
                    Reason.TOOL_LIMIT,
                    "the model still called tools on its last step",
                    model=outcome.model,
                )
            said = self.lifecycle.streamed_text[text_mark:]
            self._bank_usage()
            results = await self._run_tools(calls)
            messages.append(Message("assistant", said, tool_calls=tuple(calls)))
            messages.extend(
                Message("tool", r.content, tool_call_id=r.call_id, name=r.name) for r in results
            )
            self._emit(Status(phase=Phase.GENERATING))
            step += 1

    async def _call_chain(self, request: GenerationRequest, start: int) -> tuple[_Outcome, int]:
        """One model call with retries and fallback, from provider ``start`` of the chain (the
        one that answered the previous step). Returns the outcome and whose it is."""
        plan = self.plan
        last: _Outcome | None = None
        last_index = start
        schedulers = plan.schedulers or (None,) * len(plan.providers)
        chain = list(zip(plan.providers, schedulers, strict=True))
        for index in range(start, len(chain)):
            provider, scheduler = chain[index]
            for try_no in range(1, plan.attempts_per_provider + 1):
                if try_no > 1:
                    await self._backoff(try_no, last)
                self.attempts += 1
                outcome = await self._attempt(provider, request, self.attempts, scheduler)
                self._metrics.provider_attempts.labels(provider.name, outcome.reason.value).inc()
                shown = self.lifecycle.visible if request.step == 1 else self._attempt_text
                if shown or outcome.reason not in (
                    Reason.UPSTREAM_ERROR,
                    Reason.UPSTREAM_TRUNCATED,
                ):
                    self._found_sources.extend(self._attempt_sources)
                    if plan.tiers:
                        self.tier = plan.tiers[index]
                    return outcome, index
                last, last_index = outcome, index
                if not outcome.retryable:
                    break
                if outcome.retry_after is not None and outcome.retry_after > plan.backoff_max_s:
                    break  # the upstream asks for a longer pause than we wait: fall back now
        assert last is not None, "a route has at least one provider"
        return last, last_index

    def _take_tool_calls(self, outcome: _Outcome) -> list[ToolCallRequest]:
        """The calls the model finished making in this call, announced as ``tool.call`` events
        (after the text it wrote before them). A call cut off mid-arguments is not announced."""
        parts, self._tool_calls = self._tool_calls, {}
        if outcome.reason is not Reason.STOP:
            return []
        calls = [
            ToolCallRequest(
                call_id=part.call_id or f"call_{self.stream_id[-8:]}_{self.attempts}_{index}",
                name=part.name,
                arguments="".join(part.arguments),
            )
            for index, part in sorted(parts.items())
            if part.name
        ]
        if calls:
            self._flush_text(self._loop.time())  # what it wrote before the calls goes first
            for call in calls:
                self._emit(ToolCall(call_id=call.call_id, name=call.name, arguments=call.arguments))
        return calls

    async def _run_tools(self, calls: list[ToolCallRequest]) -> list[ToolOutcome]:
        """Run the calls at once; each ``tool.result`` goes out as its tool finishes. The
        deadlines wait (tools have their own timeout); the total deadline still holds."""
        run_tool = self.plan.run_tool
        assert run_tool is not None, "a plan with tools has a runner"
        self._emit(Status(phase=Phase.CALLING_TOOLS))
        self._in_tools = True
        self._rearm()
        tasks = [asyncio.ensure_future(run_tool(call)) for call in calls]
        started = time.perf_counter()
        try:
            for next_done in asyncio.as_completed(tasks):
                self._tool_finished(await next_done)
        finally:
            for task in tasks:
                task.cancel()
            self._stage_ms["tools"] = self._stage_ms.get("tools", 0.0) + _ms(
                time.perf_counter() - started
            )
            self._in_tools = False
            self._last_content_at = self._loop.time()
            self._rearm()
        return [task.result() for task in tasks]

    def _tool_finished(self, result: ToolOutcome) -> None:
        self._emit(ToolResult(call_id=result.call_id, ok=result.ok, summary=result.summary))
        runs = self._tool_runs[result.name] = self._tool_runs.get(result.name, 0) + 1
        key = f"tool.{result.name}" if runs == 1 else f"tool.{result.name}.{runs}"
        self._stage_ms[key] = _ms(result.elapsed_s)
        self._metrics.stages.labels("tool").observe(result.elapsed_s)
        label = "ok" if result.usable else ("empty" if result.ok else "error")
        self._metrics.tool_calls.labels(result.name, label).inc()
        if result.usable:
            self._tools_with_results.setdefault(result.name)
        self._found_sources.extend(result.sources)

    async def _backoff(self, try_no: int, last: _Outcome | None) -> None:
        """Sleep before a retry (a deadline passing meanwhile stops the turn)."""
        plan = self.plan
        await asyncio.sleep(
            backoff_delay(
                try_no - 1,
                initial_s=plan.backoff_initial_s,
                max_s=plan.backoff_max_s,
                retry_after=last.retry_after if last is not None else None,
            )
        )

    async def _attempt(
        self,
        provider: Provider,
        request: GenerationRequest,
        attempt: int,
        scheduler: ProviderScheduler | None,
    ) -> _Outcome:
        """One call of one provider, admitted by its scheduler as interactive work."""
        if scheduler is None:
            return await self._stream(provider, request, attempt)
        estimate = request.max_tokens + sum(len(m.content) for m in request.messages) // 4
        async with scheduler.slot(Priority.INTERACTIVE, tokens=estimate) as grant:
            self.scheduler_wait_s += grant.waited_s
            self._metrics.queue_wait.labels(provider.name, "interactive").observe(grant.waited_s)
            outcome = await self._stream(provider, request, attempt)
            if self._usage is not None:
                grant.used(self._usage.input_tokens + self._usage.output_tokens)
            return outcome

    async def _stream(
        self, provider: Provider, request: GenerationRequest, attempt: int
    ) -> _Outcome:
        request = dataclasses.replace(request, attempt=attempt)
        if self._inline and attempt > 1 and request.step == 1:
            assert self.extractor is not None
            self.extractor.restart_inline()
        finish: Finish | None = None
        # Only the attempt that answers counts: its sources, its tool calls.
        self._attempt_sources = []
        self._tool_calls = {}
        self._attempt_text = False
        stream = provider.stream(request)
        loop = self._loop
        try:
            async for chunk in stream:
                if type(chunk) is TextChunk:
                    if self._recorded is not None:
                        recorded, self._recorded = self._recorded, None
                        await recorded()
                    self.tokens += 1
                    self._attempt_text = self._attempt_text or bool(chunk.text)
                    now = self._last_content_at = loop.time()
                    if not self._content_seen:
                        self._first_content()
                    if self._inline:
                        assert self.extractor is not None
                        self._text(self.extractor.feed_inline(chunk.text), now)
                    else:
                        self._text(chunk.text, now)
                elif type(chunk) is Begin:
                    if self._begin_at is None:
                        self._begin_at = time.perf_counter()
                        self._emit(Status(phase=Phase.GENERATING))
                elif type(chunk) is ToolCallChunk:
                    if self._recorded is not None:
                        recorded, self._recorded = self._recorded, None
                        await recorded()
                    self._last_content_at = loop.time()
                    if not self._content_seen:
                        self._first_content()
                    self._tool_call(chunk)
                elif type(chunk) is UsageChunk:
                    self._usage = chunk
                elif type(chunk) is SourceChunk:
                    self._attempt_sources.append(chunk)
                elif type(chunk) is Finish:
                    finish = chunk
                    break
        except ProviderError as exc:
            return _Outcome(
                Reason.UPSTREAM_ERROR,
                exc.message,
                exc.retryable,
                provider.model,
                retry_after=exc.retry_after,
                code=exc.code,
            )
        except asyncio.CancelledError:
            # Stopped mid-call (cancel, disconnect, deadline, shutdown): closing the stream
            # below aborts the upstream request.
            self._metrics.upstream_aborts.labels(provider.name).inc()
            raise
        except LocalProtocolError:
            raise
        except Exception as exc:
            logger.exception("provider %s raised outside its contract", provider.name)
            return _Outcome(Reason.UPSTREAM_ERROR, f"provider error: {type(exc).__name__}")
        finally:
            self._stream_end_at = time.perf_counter()
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
        self.model = provider.model
        if finish is None:
            return _Outcome(
                Reason.UPSTREAM_TRUNCATED,
                "the upstream stream ended without its end marker",
                retryable=True,
                model=provider.model,
            )
        return _Outcome(_FINISH_REASONS[finish.reason], model=provider.model)

    # -- the structured channel ------------------------------------------------------------

    async def _extract(self, outcome: _Outcome) -> None:
        """After the text: close it (``text.done`` goes out now, so a UI can stop its cursor),
        then run or await the extraction under its timeout."""
        extractor = self.extractor
        assert extractor is not None
        success = not outcome.reason.is_partial
        if not (success or self.lifecycle.visible):
            self._cancel_parallel()
            extractor.record("skipped", "the turn failed before any answer")
            return
        self._close_text(outcome)
        if not success and extractor.plan.strategy != "parallel":
            extractor.record("skipped", f"the answer is incomplete ({outcome.reason.value})")
            return
        self._extracting = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watch()
        self._emit(Status(phase=Phase.EXTRACTING))
        started = time.perf_counter()
        try:
            async with asyncio.timeout(extractor.plan.timeout_s):
                if self._parallel is not None:
                    await self._parallel
                else:
                    await extractor.run(self._answer(self.lifecycle.streamed_text))
        except TimeoutError:
            self._cancel_parallel()
            extractor.timed_out()
        finally:
            self._extract_ms = (time.perf_counter() - started) * 1000

    def _emit_structured(self, draft: Event) -> None:
        # A cancelled parallel extraction cannot emit after the terminal event.
        if not self.lifecycle.closed:
            self._emit(draft)

    def _cancel_parallel(self) -> None:
        if self._parallel is not None and not self._parallel.done():
            self._parallel.cancel()

    def _structured(self, answer: str) -> dict[str, object] | None:
        extractor = self.extractor
        if extractor is None:
            return None
        record = extractor.result
        if record is None:
            record = extractor.record("cancelled", "the turn ended before the extraction did")
        self._metrics.structured.labels(extractor.plan.strategy, str(record["status"])).inc()
        return with_answer_hash(record, answer)

    # -- deadlines -------------------------------------------------------------------------

    def _deadline(self) -> tuple[float, Reason]:
        """The deadline in force now: first-token until content arrived, then idle; total
        whenever it comes first."""
        if self._extracting or self._in_tools:  # both have their own timeouts
            at, reason = math.inf, Reason.TIMEOUT_TOTAL
        elif not self._content_seen:
            at, reason = self._first_token_at, Reason.TIMEOUT_FIRST_TOKEN
        else:
            at, reason = self._last_content_at + self.plan.idle_s, Reason.TIMEOUT_IDLE
        if self._total_at <= at:
            at, reason = self._total_at, Reason.TIMEOUT_TOTAL
        return at, reason

    def _first_content(self) -> None:
        """The first-token deadline is met; the idle one takes over (re-arm the watchdog)."""
        self._content_seen = True
        self._rearm()

    def _rearm(self) -> None:
        """The deadline in force changed: restart the watchdog on it."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watch()

    def _watch(self) -> None:
        """The deadline watchdog. Content only moves a float (``_last_content_at``); this timer
        fires at the deadline it last saw, re-arms itself if the deadline moved, and otherwise
        stops the turn with the timeout as its reason. One timer per turn, not one per token."""
        self._watchdog = None
        if self.terminal is not None or self._stop_reason is not None:
            return
        at, reason = self._deadline()
        if not math.isfinite(at):
            return
        if self._loop.time() >= at - _CLOCK_SLACK_S:
            self.stop(reason)
            return
        self._watchdog = self._loop.call_at(at, self._watch)

    # -- output ----------------------------------------------------------------------------

    def _emit(self, draft: Event) -> Event:
        event = self.lifecycle.send(draft)
        if self._persist is not None and type(event) in (Done, Error):
            # Held back until its record is written: whoever sees it can find the record.
            self._held = event  # type: ignore[assignment]
            return event
        self._publish(event)
        return event

    def _publish(self, event: Event) -> None:
        self._log.append(self.stream_id, event)
        if self._hooks.active:
            self._hooks.offer(event)

    def _text(self, text: str, now: float) -> None:
        if not text:
            return
        out = self._coalescer.push(text, now)
        if out is not None:
            self._delta(out, now)
        elif self._flush_handle is None:
            due = self._coalescer.due_at
            if due is not None:
                self._flush_handle = self._loop.call_at(due, self._flush_due)

    def _flush_due(self) -> None:
        self._flush_handle = None
        if self.lifecycle.closed:
            return
        self._flush_text(self._loop.time())

    def _flush_text(self, now: float) -> None:
        """Send the text the coalescer still holds, now."""
        out = self._coalescer.flush(now)
        if out is not None:
            self._delta(out, now)

    def _delta(self, text: str, now: float) -> None:
        if self._first_at is None:
            self._first_at = time.perf_counter()
            self._metrics.ttft.observe(self._first_at - self._p0)
        event = self.lifecycle.text_delta(text)
        self._log.append(self.stream_id, event)
        if self._hooks.active:
            self._hooks.offer(event)

    def _tool_call(self, chunk: ToolCallChunk) -> None:
        parts = self._tool_calls.setdefault(chunk.index, _ToolCallParts())
        if chunk.call_id:
            parts.call_id = chunk.call_id
        if chunk.name:
            parts.name = (parts.name or "") + chunk.name
        if chunk.arguments_delta:
            parts.arguments.append(chunk.arguments_delta)

    # -- the end ---------------------------------------------------------------------------

    def _finish(self, outcome: _Outcome) -> None:
        self._cancel_parallel()
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        try:
            self._emit_ending(outcome)
        except Exception:
            logger.exception("turn %s: could not emit its ending; closing it", self.stream_id)
            self._emit_minimal_terminal(outcome)
        self._metrics.duration.observe(time.perf_counter() - self._p0)
        self._metrics.output_tokens.inc(self.tokens)
        terminal = self.terminal
        if terminal is not None:
            for stage, ms in terminal.timings.items():
                if stage in _STAGE_METRICS:
                    self._metrics.stages.labels(stage).observe(ms / 1000)
            reason = terminal.reason.value if isinstance(terminal, Done) else terminal.code
            self._metrics.terminals.labels(terminal.type, reason).inc()

    def _close_text(self, outcome: _Outcome) -> None:
        """Flush what the text still holds, emit the assembled tool calls and ``text.done``
        (when the turn has an answer to show). Runs once."""
        if self._text_closed:
            return
        self._text_closed = True
        now = self._loop.time()
        if self._inline:
            assert self.extractor is not None
            self._text(self.extractor.finish_inline(), now)
        self._flush_text(now)
        success = not outcome.reason.is_partial
        if success or self.lifecycle.visible:
            self._emit(TextDone(text=self.lifecycle.streamed_text))

    def _emit_ending(self, outcome: _Outcome) -> None:
        reason = outcome.reason
        success = not reason.is_partial
        if not (success or self.lifecycle.visible or reason.is_stop_request):
            self._text_closed = True
            self.terminal = self._emit_error(outcome)
            return
        self._close_text(outcome)
        text = self.lifecycle.streamed_text
        usage: Usage | None = None
        if success or self.lifecycle.visible:
            usage = self._usage_event()
            if usage is not None:
                self._emit(usage)
        post_started = time.perf_counter()
        answer = self._answer(text)
        structured = self._structured(answer)
        sources = self._sources(text, answer, structured)
        post_ms = (time.perf_counter() - post_started) * 1000
        done = self._emit(
            Done(
                answer=answer,
                status="completed" if reason is Reason.STOP else "incomplete",
                partial=reason.is_partial,
                reason=reason,
                model=outcome.model or self.model,
                route=self.plan.route,
                tier=self.tier,
                attempts=self.attempts,
                usage=(
                    {
                        "input_tokens": usage.input_tokens,
                        "output_tokens": usage.output_tokens,
                        "estimated": usage.estimated,
                    }
                    if usage is not None
                    else None
                ),
                sources=sources.keys,
                source_details=sources.details,
                structured=structured,
                tools_with_results=list(self._tools_with_results),
                context=self.plan.context,
                timings=self._timings(post_process_ms=post_ms),
            )
        )
        assert isinstance(done, Done)
        self.terminal = done

    def _emit_error(self, outcome: _Outcome) -> Error:
        event = self._emit(
            Error(
                code=outcome.code or outcome.reason.value,
                message=outcome.message or outcome.reason.value,
                retryable=outcome.retryable,
                attempts=self.attempts,
                timings=self._timings(),
                retry_after_s=outcome.retry_after,
            )
        )
        assert isinstance(event, Error)
        return event

    def _emit_minimal_terminal(self, outcome: _Outcome) -> None:
        """Last resort after a bug: whatever the state allows, end the stream."""
        if self.lifecycle.closed:
            return
        if self.lifecycle.can_send("error"):
            self.terminal = self._emit_error(outcome)
            return
        event = self._emit(
            Done(
                answer=self._answer(self.lifecycle.streamed_text),
                status="incomplete",
                partial=True,
                reason=outcome.reason if outcome.reason.is_partial else Reason.UPSTREAM_ERROR,
                model=self.model,
                route=self.plan.route,
                tier=self.tier,
                attempts=self.attempts,
                timings=self._timings(),
            )
        )
        assert isinstance(event, Done)
        self.terminal = event

    def _answer(self, streamed: str) -> str:
        return canonical_answer(streamed, citations=len(self._passages))

    def _sources(
        self, streamed: str, answer: str, structured: dict[str, object] | None
    ) -> SourceCollector:
        """The answer's sources, in order: the retrieved passages (the cited ones first), what
        tools and the provider reported, what the structured data lists; only when none of
        those exist, the URLs the answer itself mentions."""
        sources = SourceCollector()
        cited = cited_numbers(streamed, citations=len(self._passages))
        sources.extend(ordered_sources(self._passages, cited))
        sources.extend(self._found_sources)
        if structured is not None and structured.get("data") is not None:
            sources.extend(structured_sources(structured["data"], origin="structured"))
        if not sources:
            sources.extend(urls_in_text(answer))
        return sources

    def _bank_usage(self) -> None:
        """A model call of the tool loop ended: add what it used to the turn's sum."""
        used, self._usage = self._usage, None
        if used is None:
            return
        earlier = self._earlier_usage
        if earlier is not None:
            used = UsageChunk(
                input_tokens=earlier.input_tokens + used.input_tokens,
                output_tokens=earlier.output_tokens + used.output_tokens,
                estimated=earlier.estimated or used.estimated,
            )
        self._earlier_usage = used

    def _usage_event(self) -> Usage | None:
        self._bank_usage()
        if self._earlier_usage is not None:
            return Usage(
                input_tokens=self._earlier_usage.input_tokens,
                output_tokens=self._earlier_usage.output_tokens,
                estimated=self._earlier_usage.estimated,
            )
        if self.tokens == 0 and self._begin_at is None:
            return None
        # No provider count: estimate (about 4 characters per token of input).
        chars = sum(len(m.content) for m in self.plan.generation.messages)
        return Usage(input_tokens=max(1, chars // 4), output_tokens=self.tokens, estimated=True)

    def _timings(self, *, post_process_ms: float | None = None) -> dict[str, float]:
        now = time.perf_counter()
        t0 = self._p0

        def ms(seconds: float) -> float:
            return round(seconds * 1000, 2)

        timings: dict[str, float] = dict(self._stage_ms)
        if self._begin_at is not None:
            timings["queued"] = ms(self._begin_at - t0)  # scheduler wait included
        if self.scheduler_wait_s:
            timings["scheduler_wait"] = ms(self.scheduler_wait_s)
        if self._first_at is not None:
            timings["first_token"] = ms(self._first_at - t0)
            end = self._stream_end_at if self._stream_end_at is not None else now
            timings["stream"] = ms(max(0.0, end - self._first_at))
        if self._extract_ms is not None:
            timings["extract"] = round(self._extract_ms, 2)
        if post_process_ms is not None:
            timings["post_process"] = round(post_process_ms, 3)
        timings["total"] = ms(now - t0)
        return timings


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


_STAGE_METRICS = frozenset(
    {"precheck", "route", "retrieval", "first_token", "stream", "extract", "post_process", "total"}
)
"""``timings`` keys observed in ``tokenwire_stage_seconds`` when a turn ends (``persist`` and
each ``tool`` call are observed where they happen)."""

_CLOCK_SLACK_S = 0.001
"""A timer may fire up to this early (uvloop's clock counts milliseconds)."""

_DEADLINE_MESSAGES = {
    Reason.TIMEOUT_FIRST_TOKEN: "no token arrived before the first-token deadline",
    Reason.TIMEOUT_IDLE: "the upstream went quiet for longer than the idle deadline",
    Reason.TIMEOUT_TOTAL: "the turn ran past its total deadline",
    Reason.LOG_UNAVAILABLE: "the turn's events could not be written to the event log",
    Reason.WORKER_LOST: "this worker lost its claim on the turn",
}
