"""The scripted provider: deterministic streams with faults on demand.

Front-end developers build against it (same tokens, same timing, every time) and the test suite
uses it to produce failures that real upstreams produce only by accident. A request carries its
script::

    {"tokens": ["Hel", "lo"], "delay_ms": 20,
     "fault": {"kind": "fail", "at": 3, "times": 1, "retryable": true}}

Fault kinds, applied when the stream reaches token index ``at`` (0 = before the first token):

- ``fail``: raise :class:`ProviderError` as an upstream would: ``code`` names the cause (a
  ``providers/failures.py`` code; default the one ``status`` gives, else ``upstream_error``),
  ``retryable`` and ``retry_after_s`` as given; ``message`` plays the upstream's own words, so
  it is logged (redacted) and the client reads tokenwire's message for the code. ``times``
  limits the fault to the first N attempts, so a retry can then succeed (in a tool loop: the
  first N attempts of that step).
- ``hang``: stop producing anything until the consumer gives up (deadline or cancel).
- ``truncate``: end the stream without its end marker.

Tokens may contain anything, newlines and SSE-looking lines included: they are data.

Tool loops: a script's ``tool_calls`` stream after its tokens (finish ``tool_calls`` unless the
script says otherwise), and ``then`` scripts what the later steps stream, each with its own
tokens, tool calls and fault::

    {"tool_calls": [{"name": "current_time", "arguments": ["{}"]}],
     "then": [{"tokens": ["It is ", "noon."]}]}
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .base import (
    Begin,
    Finish,
    GenerationRequest,
    ProviderChunk,
    ProviderHealth,
    SourceChunk,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
    upstream_failure,
)
from .failures import FAILURES, FailureCode, classify

DEFAULT_TOKENS = ("Hello", " from", " the", " scripted", " provider", ".")


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["fail", "hang", "truncate"]
    at: int = Field(default=0, ge=0, description="token index the fault fires at (0 = first)")
    times: int | None = Field(
        default=None, ge=1, description="fire on the first N attempts only (default: every one)"
    )
    code: FailureCode | None = Field(
        default=None,
        description="the cause to report (default: the status's, else upstream_error)",
    )
    retryable: bool | None = Field(
        default=None,
        description="default: the cause's (true when neither code nor status is given)",
    )
    message: str = Field(
        default="scripted failure",
        description="the upstream's own words: logged (redacted), never sent to the client",
    )
    status: int | None = Field(default=None, ge=100, le=599)
    retry_after_s: float | None = Field(
        default=None, ge=0, le=3600, description="the Retry-After the upstream would send"
    )

    def failure(self) -> tuple[FailureCode, bool]:
        """The cause this fault reports, and whether it is retryable."""
        if self.code is not None:
            code = self.code
        elif self.status is not None:
            code = classify(self.status)
        else:
            code = FailureCode.ERROR
        if self.retryable is not None:
            return code, self.retryable
        named = self.code is not None or self.status is not None
        return code, FAILURES[code].retryable if named else True


class ScriptedToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    arguments: list[str] = Field(description="argument JSON, split into the pieces to stream")
    call_id: str | None = None


class ScriptedSource(BaseModel):
    """A source the script reports, as a retrieval step or a provider's citations would."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(default=None, max_length=4096)
    id: str | None = Field(default=None, max_length=512)
    title: str | None = Field(default=None, max_length=1024)
    snippet: str | None = Field(default=None, max_length=8192)
    origin: str | None = Field(default=None, max_length=128)


class Script(BaseModel):
    """What the scripted provider streams for one request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_TOKENS), max_length=100_000)
    repeat: int = Field(default=1, ge=1, le=1_000_000, description="stream `tokens` N times over")
    delay_ms: float = Field(default=0, ge=0, le=60_000, description="pause before each token")
    first_delay_ms: float | None = Field(
        default=None, ge=0, le=600_000, description="pause before the first token (else delay_ms)"
    )
    finish: Literal["stop", "length", "tool_calls", "content_filter"] = "stop"
    usage: bool = True
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list, max_length=32)
    sources: list[ScriptedSource] = Field(
        default_factory=list,
        max_length=256,
        description="sources reported after Begin, before the first token",
    )
    fault: Fault | None = None
    extraction: Script | None = Field(
        default=None,
        description="what to stream for this turn's extraction calls (default: the JSON `{}`)",
    )
    then: list[Script] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "what later steps of a tool loop stream: step 2 (the call after the first round of "
            "tool results) streams then[0], step 3 then[1], ...; past the list's end, the last "
            "one (with no list, every step streams this script)"
        ),
    )

    @model_validator(mode="after")
    def _flat_steps(self) -> Script:
        if any(step.then for step in self.then):
            raise ValueError("the scripts in `then` cannot have a `then` of their own")
        return self

    def for_step(self, step: int) -> Script:
        """The script of tool-loop step ``step`` (1 = this one)."""
        if step <= 1 or not self.then:
            return self
        return self.then[min(step - 2, len(self.then) - 1)]

    @property
    def finish_reason(self) -> Literal["stop", "length", "tool_calls", "content_filter"]:
        """``finish`` as given; left out, ``tool_calls`` for a script that makes tool calls."""
        if self.tool_calls and "finish" not in self.model_fields_set:
            return "tool_calls"
        return self.finish


_DEFAULT_EXTRACTION = Script(tokens=["{", "}"])


# (id of a request's raw script, step) → (that script, the attempt number of the step's first
# call). Shared by every instance: a fallback to another scripted provider is the same turn.
_STEP_STARTS: collections.OrderedDict[tuple[int, int], tuple[object, int]] = (
    collections.OrderedDict()
)
_STEP_STARTS_KEPT = 1024


def _attempt_of_step(request: GenerationRequest) -> int:
    """Which attempt at its own step ``request`` is (1 = the step's first call), for ``times``.

    Step 1 is the turn's attempt number. A later step's calls carry the turn's attempt count
    (or one of the step's own; either works), so the first call seen for the step sets its
    base. The turn is told by its script: one parsed request body, the same mapping object for
    every call of the turn. A call whose attempt is not past the recorded base starts anew (a
    new turn that reuses the script object).
    """
    if request.step <= 1 or request.script is None:
        return request.attempt
    key = (id(request.script), request.step)
    start = _STEP_STARTS.get(key)
    if start is None or start[0] is not request.script or request.attempt <= start[1]:
        start = (request.script, request.attempt)
        _STEP_STARTS[key] = start
        while len(_STEP_STARTS) > _STEP_STARTS_KEPT:
            _STEP_STARTS.popitem(last=False)
    _STEP_STARTS.move_to_end(key)
    return request.attempt - start[1] + 1


def parse_script(raw: Mapping[str, Any] | None) -> Script:
    """Validate a request's script; raises ``ValueError`` with a readable message."""
    if raw is None:
        return Script()
    try:
        return Script.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"invalid script: {exc.errors(include_url=False)}") from exc


class ScriptedProvider:
    """Streams :class:`Script` tokens. Counts the streams it started, finished and saw aborted,
    so tests can assert that a cancel or a deadline really stopped the upstream."""

    kind = "scripted"

    def __init__(self, name: str = "scripted", model: str = "scripted") -> None:
        self.name = name
        self.model = model
        self.started = 0
        self.finished = 0
        self.aborted = 0
        self.requests: collections.deque[GenerationRequest] = collections.deque(maxlen=256)
        """The latest requests it was asked (newest last), so tests can see the prompt, the
        tools and the tool results it was sent."""
        self._abort_waiters: list[asyncio.Event] = []

    async def wait_aborted(self, count: int = 1) -> None:
        """Wait until at least ``count`` streams were aborted by their consumer."""
        while self.aborted < count:
            event = asyncio.Event()
            self._abort_waiters.append(event)
            await event.wait()

    def stream(self, request: GenerationRequest) -> AsyncIterator[ProviderChunk]:
        self.requests.append(request)
        script = parse_script(request.script)
        if request.json_schema is not None:
            script = script.extraction or _DEFAULT_EXTRACTION
        else:
            script = script.for_step(request.step)
        return self._run(script, _attempt_of_step(request), len(request.messages))

    async def _run(
        self, script: Script, attempt: int, n_messages: int
    ) -> AsyncIterator[ProviderChunk]:
        self.started += 1
        end_marker_sent = False
        fault = script.fault
        if fault is not None and fault.times is not None and attempt > fault.times:
            fault = None
        try:
            yield Begin()
            for source in script.sources:
                yield SourceChunk(**source.model_dump())
            tokens = script.tokens * script.repeat if script.repeat > 1 else script.tokens
            for index, token in enumerate(tokens):
                if fault is not None and fault.at == index:
                    await self._fire(fault)
                    return
                delay = script.delay_ms
                if index == 0 and script.first_delay_ms is not None:
                    delay = script.first_delay_ms
                if delay:
                    await asyncio.sleep(delay / 1000)
                yield TextChunk(token)
            if fault is not None and fault.at >= len(tokens):
                await self._fire(fault)
                return
            for position, call in enumerate(script.tool_calls):
                call_id = call.call_id or f"call_{position}"
                yield ToolCallChunk(index=position, call_id=call_id, name=call.name)
                for piece in call.arguments:
                    yield ToolCallChunk(index=position, arguments_delta=piece)
            if script.usage:
                yield UsageChunk(input_tokens=n_messages, output_tokens=len(tokens))
            # Finished once the end marker is out: a consumer closing us after it is no abort.
            end_marker_sent = True
            self.finished += 1
            yield Finish(script.finish_reason)
        except (asyncio.CancelledError, GeneratorExit):
            if not end_marker_sent:
                self._note_abort()
            raise

    async def _fire(self, fault: Fault) -> None:
        if fault.kind == "fail":
            code, retryable = fault.failure()
            raise upstream_failure(
                self.name,
                code,
                fault.message,
                status=fault.status,
                retry_after=fault.retry_after_s,
                retryable=retryable,
            )
        if fault.kind == "hang":
            await asyncio.Event().wait()
        # "truncate": return without Finish.

    def _note_abort(self) -> None:
        self.aborted += 1
        waiters, self._abort_waiters = self._abort_waiters, []
        for waiter in waiters:
            waiter.set()

    async def start(self) -> None:
        return None

    async def check(self) -> ProviderHealth:
        return ProviderHealth(True, "built in")

    async def aclose(self) -> None:
        return None
