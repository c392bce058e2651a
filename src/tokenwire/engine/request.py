"""The request to run a turn: the body of ``POST /v1/streams`` and of a WebSocket ``generate``.

Strict: unknown fields, wrong types (``"max_tokens": "5"``) and empty conversations are
rejected, so a client's typo is an error it sees, not a default it silently gets.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_CONTENT_CHARS = 1_000_000


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_CONTENT_CHARS)


class DeadlineOverrides(BaseModel):
    """Per-request deadlines in seconds; each may only tighten the configured one."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    first_token_s: float | None = Field(default=None, gt=0)
    idle_s: float | None = Field(default=None, gt=0)
    total_s: float | None = Field(default=None, gt=0)


class TurnRequest(BaseModel):
    """What to generate, and how. Give ``messages`` or ``prompt`` (one user message)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    messages: list[ChatMessage] | None = Field(default=None, max_length=10_000)
    prompt: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    route: str | None = Field(
        default=None, max_length=200, description="default: chosen by the routing rules"
    )
    tier: str | None = Field(
        default=None, max_length=100, description="a model tier of the route (fast, smart, ...)"
    )
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stop: list[str] | None = Field(default=None, max_length=8)
    conversation_id: str | None = Field(default=None, max_length=200)
    deadlines: DeadlineOverrides | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    on_disconnect: Literal["cancel", "continue"] = Field(
        default="cancel",
        description="when the client that started the turn leaves: stop it now, or keep it "
        "running for limits.disconnect_grace_s so a reader can resume",
    )
    background: bool = Field(
        default=False, description="run to the end regardless of clients (POST answers 202)"
    )
    extraction: dict[str, Any] | None = Field(
        default=None,
        description="structured output: {schema (inline or a registered name), strategy, ...}",
    )
    script: dict[str, Any] | None = Field(
        default=None, description="for route `scripted` only: tokens, delays and faults"
    )

    @model_validator(mode="after")
    def _one_conversation(self) -> TurnRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("`prompt` is empty")
        if self.messages is not None:
            if not self.messages:
                raise ValueError("`messages` is empty")
            if not any(m.role == "user" and m.content.strip() for m in self.messages):
                raise ValueError("`messages` has no non-empty user message")
        return self

    def chat(self) -> list[ChatMessage]:
        """The conversation as messages (``prompt`` becomes one user message)."""
        if self.messages is not None:
            return list(self.messages)
        return [ChatMessage(role="user", content=self.prompt or "")]


class RequestError(Exception):
    """The request cannot be served as asked: the client's fault, reported as a 4xx."""

    def __init__(self, code: str, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class Overloaded(RequestError):
    """Too many turns in flight: the client may retry later (503 with Retry-After)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__("overloaded", message, status=503)
        self.retry_after_s = retry_after_s


def validation_message(exc: ValidationError) -> str:
    """A validation failure as one line a client can act on: ``where: what`` for the first ten
    problems (``messages.0.content: Input should be a valid string; ...``)."""
    parts = []
    for err in exc.errors(include_url=False)[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
