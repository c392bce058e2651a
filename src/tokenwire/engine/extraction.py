"""One turn's structured extraction: the system channel's side of a turn.

Strategies (the request's ``extraction.strategy``, or ``auto`` resolved by
:func:`~tokenwire.output.choose_strategy`):

- ``inline``: the answering call also writes a ``<json>`` block after its answer. The turn
  passes every text chunk through :meth:`Extractor.feed_inline`, which keeps the block out of
  the human channel and previews it as ``structured.partial``.
- ``sequential``: after the text ends, a second (background-priority) call extracts JSON from
  the user's message and the canonical answer, schema-constrained where the provider can.
- ``parallel``: that call starts with the answering one, from the user's message alone.

Every strategy ends the same way: parse (repairing only what is unambiguous), validate, and on
failure re-ask with what was wrong, up to ``max_retries`` times; then ``structured.done`` or
``structured.error``. :meth:`Extractor.run` never raises for the model's or the provider's
fault: what happened is its return value, the ``done.structured`` record.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..output import (
    UNCHANGED,
    InlineSplitter,
    PartialJSON,
    ResolvedSchema,
    Strategy,
    answer_hash,
    extraction_messages,
    extraction_prompt,
    parse_and_repair,
    reask_messages,
    validate,
)
from ..output.bounds import bounded_schema
from ..protocol import Event, StructuredDone, StructuredError, StructuredPartial, StructuredReset
from ..providers import Finish, GenerationRequest, Message, Provider, ProviderError, TextChunk
from .metrics import EngineMetrics
from .scheduler import Priority, ProviderScheduler

logger = logging.getLogger("tokenwire.extraction")


@dataclass(frozen=True, slots=True)
class ExtractionPlan:
    """A turn's extraction, resolved from the request and the settings."""

    schema: ResolvedSchema
    strategy: Strategy
    requested: str
    """The strategy the request asked for (``auto`` included), to report with the result."""
    max_retries: int
    timeout_s: float
    max_tokens: int


class _CallFailed(Exception):
    """Every provider of the chain failed the extraction call."""


class Extractor:
    """Runs :class:`ExtractionPlan` for one turn; emits through ``emit`` (the turn's own)."""

    def __init__(
        self,
        plan: ExtractionPlan,
        *,
        emit: Callable[[Event], object],
        providers: Sequence[Provider],
        schedulers: Sequence[ProviderScheduler | None],
        user_message: str,
        base: GenerationRequest,
        metrics: EngineMetrics | None = None,
    ) -> None:
        """``base`` is the turn's own request: extraction calls keep its metadata (and, for the
        scripted provider, its script, whose ``extraction`` part they play)."""
        self.plan = plan
        self._base_request = base
        self._metrics = metrics
        self._emit = emit
        self._providers = providers
        self._schedulers = schedulers
        self._user_message = user_message
        self._splitter = InlineSplitter() if plan.strategy == "inline" else None
        self._inline_json: list[str] = []
        self._continues: tuple[Message, ...] = ()
        self._partial = PartialJSON(plan.schema)
        self.attempts = 0
        self._cut = False  # the last extraction call ended at max_tokens
        self._bounds_scale = 1.0  # < 1 once a cut call was asked again under tighter bounds
        self.result: dict[str, Any] | None = None

    # -- inline: the answering call's text passes through here ---------------------------

    def feed_inline(self, text: str) -> str:
        """The visible part of ``text``; the block's part is kept and previewed."""
        assert self._splitter is not None
        out = self._splitter.feed(text)
        if out.json_text:
            self._inline_json.append(out.json_text)
            self._preview(out.json_text)
        return out.visible

    def restart_inline(self) -> None:
        """A new attempt of the answering call (nothing visible yet): forget what the failed
        one left held back or previewed, so it cannot mix into the new stream."""
        if self._splitter is not None:
            self._splitter = InlineSplitter()
            self._inline_json.clear()
            self._start_over(1, "answer_retried")

    def finish_inline(self) -> str:
        """End of the answering stream: the visible text still held back (if any)."""
        assert self._splitter is not None
        out = self._splitter.finish()
        if out.json_text:
            self._inline_json.append(out.json_text)
            self._preview(out.json_text)
        return out.visible

    # -- the extraction ------------------------------------------------------------------

    async def run(self, answer: str | None) -> dict[str, Any]:
        """Extract, validate, re-ask; emit ``structured.done`` or ``structured.error``.
        ``answer`` is the canonical answer (None for ``parallel``, which reads the user's
        message alone). Returns the ``done.structured`` record (also kept in ``result``)."""
        base = self._messages(answer)
        if answer is not None:
            # The local model continues the answering transcript it still has evaluated.
            self._continues = (*self._base_request.messages, Message("assistant", answer))
        try:
            if self.plan.strategy == "inline":
                self.attempts = 1
                text = "".join(self._inline_json)
                if not text.strip():
                    text = ""  # no block at all: parse says so, and a re-ask asks for one
            else:
                text = await self._call(base)
            while True:
                outcome = parse_and_repair(text)
                if outcome.ok:
                    issues = validate(outcome.data, self.plan.schema)
                    if not issues:
                        self._emit(StructuredDone(data=outcome.data, schema=self.plan.schema.name))
                        return self._finish("ok", data=outcome.data, repaired=outcome.repaired)
                    code, problem = "schema_invalid", "; ".join(str(i) for i in issues)
                    reask = reask_messages(text, issues)
                elif self._cut:
                    # Cut by max_tokens: asking again the same way is cut again. Once, the same
                    # question under tighter bounds for the decoder; then the reason, at once.
                    if self._bounds_scale < 1 or self.attempts > self.plan.max_retries:
                        return self._fail("truncated", self._cut_reason())
                    self._bounds_scale = 0.5
                    self._start_over(self.attempts + 1, "truncated")
                    text = await self._call(base)
                    continue
                else:
                    code, problem = outcome.status, outcome.message or outcome.status
                    reask = reask_messages(text, problem)
                if self.attempts > self.plan.max_retries:
                    return self._fail(code, problem)
                self._start_over(self.attempts + 1, code)
                text = await self._call([*base, *reask])
        except _CallFailed as exc:
            return self._fail("extraction_failed", str(exc))

    def timed_out(self) -> dict[str, Any]:
        """The record (and ``structured.error``) of an extraction cut by its timeout."""
        return self._fail("timeout", f"extraction took longer than {self.plan.timeout_s:g} s")

    def record(self, status: str, reason: str) -> dict[str, Any]:
        """The record of an extraction that did not run to its end (skipped, cancelled)."""
        self.result = {
            **self._base(),
            "status": status,
            "error": {"code": status, "message": reason},
        }
        return self.result

    # -- internals -----------------------------------------------------------------------

    def _messages(self, answer: str | None) -> list[tuple[str, str]]:
        schema = self.plan.schema.json_schema
        if self._providers and self._providers[0].kind == "local":
            # A base model continues a document better than it follows chat instructions.
            return [("user", extraction_prompt(self._user_message, answer, schema))]
        return list(extraction_messages(self._user_message, answer, schema))

    async def _call(self, messages: Sequence[tuple[str, str]]) -> str:
        self.attempts += 1
        request = dataclasses.replace(
            self._base_request,
            messages=tuple(Message(role, content) for role, content in messages),  # type: ignore[arg-type]
            max_tokens=self.plan.max_tokens,
            temperature=0.0,
            stop=(),
            json_schema=self._decoder_schema(),
            continues=self._continues,
            attempt=self.attempts,
        )
        failures: list[str] = []
        for provider, scheduler in zip(self._providers, self._schedulers, strict=True):
            try:
                if scheduler is None:
                    return await self._stream(provider, request)
                async with scheduler.slot(Priority.BACKGROUND, tokens=request.max_tokens) as grant:
                    if self._metrics is not None:
                        wait = self._metrics.queue_wait.labels(provider.name, "background")
                        wait.observe(grant.waited_s)
                    return await self._stream(provider, request)
            except ProviderError as exc:
                failures.append(f"{provider.name}: {exc.message}")
        raise _CallFailed("; ".join(failures) or "no provider")

    async def _stream(self, provider: Provider, request: GenerationRequest) -> str:
        parts: list[str] = []
        self._cut = False
        stream = provider.stream(request)
        try:
            async for chunk in stream:
                if type(chunk) is TextChunk:
                    parts.append(chunk.text)
                    self._preview(chunk.text)
                elif type(chunk) is Finish:
                    self._cut = chunk.reason == "length"
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return "".join(parts)

    def _decoder_schema(self) -> dict[str, Any]:
        """The schema the extraction call is constrained by: the user's, or after a cut the
        user's with tighter bounds (which still validates only what the user's accepts)."""
        schema = self.plan.schema.json_schema
        if self._bounds_scale == 1:
            return schema
        return bounded_schema(schema, max_tokens=self.plan.max_tokens, scale=self._bounds_scale)

    def _cut_reason(self) -> str:
        return (
            f"the JSON was cut by max_tokens ({self.plan.max_tokens}), also under tighter "
            "bounds: bound the schema's strings and arrays (maxLength, maxItems) or raise "
            "extraction.max_tokens"
            if self._bounds_scale < 1
            else f"the JSON was cut by max_tokens ({self.plan.max_tokens})"
        )

    def _start_over(self, attempt: int, code: str) -> None:
        """A new object streams from here: a UI showing partials must drop the old ones. A
        re-ask always says so; a retried answering call only when it had previewed something."""
        if attempt > 1 or self._partial.value is not UNCHANGED:
            self._emit(StructuredReset(attempt=attempt, code=code))
        self._partial = PartialJSON(self.plan.schema)

    def _preview(self, text: str) -> None:
        value = self._partial.feed(text)
        if value is not UNCHANGED:
            self._emit(StructuredPartial(data=value))

    def _base(self) -> dict[str, Any]:
        return {
            "strategy": self.plan.strategy,
            "requested_strategy": self.plan.requested,
            "schema": self.plan.schema.name,
            "attempts": self.attempts,
            "data": None,
            "valid": False,
            "needs_review": False,
            "error": None,
        }

    def _finish(self, status: str, *, data: Any, repaired: bool) -> dict[str, Any]:
        self.result = {
            **self._base(),
            "status": status,
            "data": data,
            "valid": True,
            "repaired": repaired,
        }
        return self.result

    def _fail(self, code: str, message: str) -> dict[str, Any]:
        self._emit(StructuredError(code=code, message=message))
        self.result = {
            **self._base(),
            "status": "error",
            "needs_review": True,
            "error": {"code": code, "message": message},
        }
        return self.result


def with_answer_hash(record: dict[str, Any], answer: str) -> dict[str, Any]:
    """The record, stamped with the hash of the canonical answer it goes with."""
    return {**record, "answer_hash": answer_hash(answer)}
