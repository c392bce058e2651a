"""Settings of the built-in routes: the ``[router]`` section of the TOML file.

::

    [router.routes.negative_feedback]
    when = { field = "structured.data.sentiment", equals = "negative" }
    sink = { kind = "webhook", url = "http://127.0.0.1:9000/hook", secret_env = "HOOK_SECRET" }
    timeout_s = 10

    [router.routes.audit]                        # no `when`: every turn
    sink = { kind = "jsonl", path = "/var/log/tokenwire/turns.jsonl" }

Build the routes with :meth:`tokenwire.router.Router.from_settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .conditions import Condition
from .record import ROUTE_NAME


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookSinkSettings(_Section):
    kind: Literal["webhook"] = "webhook"
    url: str = Field(description="http:// or https:// URL the record is POSTed to")
    secret_env: str | None = Field(
        default=None, description="env var holding the HMAC secret; unset: unsigned requests"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    retry_after_max_s: float = Field(
        default=60.0, ge=0, description="a longer Retry-After is cut to this"
    )
    request_timeout_s: float = Field(default=10.0, gt=0, description="per attempt")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("a webhook url starts with http:// or https://")
        return value


class JsonlSinkSettings(_Section):
    kind: Literal["jsonl"] = "jsonl"
    path: Path
    fsync: bool = Field(default=False, description="fsync after each line (slower, durable)")


class SqlSinkSettings(_Section):
    kind: Literal["sql"] = "sql"
    url: str | None = Field(
        default=None,
        description="sqlite+aiosqlite:///PATH or postgresql+asyncpg://...; default: the store's",
    )


SinkSettings = Annotated[
    WebhookSinkSettings | JsonlSinkSettings | SqlSinkSettings, Field(discriminator="kind")
]


class BuiltinRouteSettings(_Section):
    when: Condition | None = Field(default=None, description="no condition: every turn")
    sink: SinkSettings
    timeout_s: float | None = Field(
        default=None, gt=0, description="for the whole delivery, retries included"
    )
    enabled: bool = True


class RouterSettings(_Section):
    """The ``[router]`` section: built-in routes by name (the name is in the idempotency key)."""

    default_timeout_s: float = Field(default=30.0, gt=0)
    routes: dict[str, BuiltinRouteSettings] = Field(default_factory=dict)

    @field_validator("routes")
    @classmethod
    def _route_names(
        cls, routes: dict[str, BuiltinRouteSettings]
    ) -> dict[str, BuiltinRouteSettings]:
        for name in routes:
            if not ROUTE_NAME.match(name):
                raise ValueError(f"route name {name!r} must match {ROUTE_NAME.pattern}")
        return routes
