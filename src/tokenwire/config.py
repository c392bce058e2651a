"""One settings object, from a TOML file and ``TOKENWIRE_*`` environment variables.

Precedence, highest first: keyword arguments, environment (``TOKENWIRE_SERVER__PORT=9000``;
nested keys joined with ``__``), the TOML file, the defaults. The defaults need no file: the
local Gemma model behind route ``default``, served on 127.0.0.1:8000.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .auth.settings import AuthSettings
from .config_errors import ConfigError, config_error
from .router.conditions import Condition
from .router.config import RouterSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


_HOST_NAME = r"^(\*|(\*\.)?[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])$"
_ORIGIN = r"^(\*|https?://([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?/?)$"


class ServerSettings(_Section):
    """The ``[server]`` section: where to listen, and who may drive the server from a browser
    (see ``tokenwire.server.origins``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    heartbeat_s: float = Field(default=15.0, gt=0, description="SSE comment interval")
    allowed_hosts: list[Annotated[str, Field(pattern=_HOST_NAME)]] | None = Field(
        default=None,
        description=(
            "Host header names served (any port; '*.example.com' a domain's subdomains; '*' "
            "any). Default: auth off, the loopback names plus the bind host (no DNS "
            "rebinding); auth on, any"
        ),
    )
    allowed_origins: list[Annotated[str, Field(pattern=_ORIGIN)]] | None = Field(
        default=None,
        description=(
            "browser origins (scheme://host[:port]) other than the server's own that may call "
            "it, with CORS; '*' any. Requests with no Origin always pass. Default: auth off, "
            "none; auth on, any (every request needs a key a foreign page does not have)"
        ),
    )
    cors_allow_credentials: bool = Field(
        default=False,
        description="send Access-Control-Allow-Credentials to the origins listed by name",
    )
    cors_max_age_s: int = Field(
        default=600, ge=0, description="how long a browser may cache a preflight's answer"
    )


class _ProviderSection(_Section):
    """What every provider has: the limits its calls are scheduled under (see
    ``engine.scheduler``): interactive calls (the user's text) go first, background ones
    (extraction) wait, with aging so they are never starved."""

    concurrency: int | None = Field(default=None, ge=1, description="calls at once; None: any")
    rpm: float | None = Field(default=None, gt=0, description="requests per minute budget")
    tpm: float | None = Field(default=None, gt=0, description="tokens per minute budget")


class LocalProviderSettings(_ProviderSection):
    kind: Literal["local"] = "local"
    model_path: str | None = Field(
        default=None, description="a GGUF file; default: the packaged Gemma 3 270M"
    )
    model: str = "gemma-3-270m"
    n_ctx: int = Field(default=2048, ge=256)
    n_threads: int | None = Field(default=None, ge=1, description="default: all cores")
    temperature: float = Field(default=0.3, ge=0, le=2)
    repeat_penalty: float = Field(default=1.15, ge=0.5, le=2)
    max_waiting: int = Field(
        default=64, ge=0, description="turns that may queue for the model before 503"
    )
    preload: bool = Field(default=True, description="load the model when the server starts")
    concurrency: int | None = Field(
        default=1, ge=1, description="one model: calls take turns, interactive ones first"
    )
    prefill_chunk_tokens: int = Field(
        default=128,
        ge=1,
        description="prompt tokens evaluated between two checks for a stop: a stop during a "
        "long prompt frees the model after at most this many",
    )
    extra_buffer_types: bool = Field(
        default=False,
        description="let llama.cpp repack weights for the CPU's matrix units (AMX): faster "
        "where they work, a crash on machines that list them without providing them",
    )


class OpenAIProviderSettings(_ProviderSection):
    kind: Literal["openai"] = "openai"
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str | None = "OPENAI_API_KEY"
    connect_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
    context_window: int | None = Field(
        default=None,
        ge=256,
        description="tokens prompt + answer may hold; default: known per model (else 128k)",
    )


class AnthropicProviderSettings(_ProviderSection):
    kind: Literal["anthropic"] = "anthropic"
    base_url: str | None = None
    model: str = "claude-3-5-haiku-latest"
    api_key_env: str | None = "ANTHROPIC_API_KEY"
    connect_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    context_window: int | None = Field(
        default=None,
        ge=256,
        description="tokens prompt + answer may hold; default: known per model (else 128k)",
    )


class ScriptedProviderSettings(_ProviderSection):
    kind: Literal["scripted"] = "scripted"
    model: str = "scripted"
    context_window: int | None = Field(
        default=None,
        ge=256,
        description="tokens prompt + answer may hold; default: known per model (else 128k)",
    )


ProviderSettings = Annotated[
    LocalProviderSettings
    | OpenAIProviderSettings
    | AnthropicProviderSettings
    | ScriptedProviderSettings,
    Field(discriminator="kind"),
]


class RetrievalRouteSettings(_Section):
    """A route that looks passages up before it generates (see ``tokenwire.retrieval``)."""

    top_k: int = Field(default=4, ge=1, le=50, description="passages put in the prompt at most")
    max_chars: int = Field(
        default=3000, ge=200, description="characters of passages the prompt holds at most"
    )
    min_score: float | None = Field(
        default=None, description="passages scoring below this are left out (backend's scale)"
    )
    timeout_s: float = Field(default=5.0, gt=0, description="then the turn answers without")


class RouteSettings(_Section):
    """What a turn on this route does: which models (tiers), prompt, tools, retrieval."""

    providers: list[str] | None = Field(
        default=None,
        min_length=1,
        description="fallback chain, tried in order (shorthand for one tier named `default`)",
    )
    tiers: dict[str, list[str]] = Field(
        default_factory=dict,
        description="model tiers: name → provider chain (e.g. fast = [...], smart = [...])",
    )
    tier: str | None = Field(default=None, description="the tier used by default (first tier)")
    fallback: list[str] = Field(
        default_factory=list,
        description="tiers tried, in order, when the chosen tier fails before the first token",
    )
    system_prompt: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    tools: list[str] = Field(default_factory=list, description="tools the model may call")
    tool_choice: Literal["auto", "required"] = Field(
        default="auto", description="required: the first call must call a tool"
    )
    max_tool_steps: int = Field(
        default=4,
        ge=1,
        le=32,
        description="model calls per turn; the last one is offered no tools, so it answers",
    )
    retrieval: RetrievalRouteSettings | None = Field(
        default=None, description="look passages up in the knowledge base first"
    )
    extraction: dict[str, Any] | None = Field(
        default=None, description="the structured output of turns that ask for none"
    )

    @field_validator("retrieval", mode="before")
    @classmethod
    def _retrieval_switch(cls, value: Any) -> Any:
        # `retrieval = true` is how users write "on, with the defaults"; `false`: off.
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @model_validator(mode="after")
    def _one_chain_shape(self) -> RouteSettings:
        if (self.providers is None) == (not self.tiers):
            raise ValueError("give exactly one of `providers` or `tiers`")
        for name, chain in self.tier_chains.items():
            if not chain:
                raise ValueError(f"tier {name!r} names no provider")
        for name in (self.default_tier, *self.fallback):
            if name not in self.tier_chains:
                raise ValueError(f"tier {name!r} is not one of: {', '.join(self.tier_chains)}")
        return self

    @property
    def tier_chains(self) -> dict[str, list[str]]:
        """Tier name → provider chain (``providers`` alone is the tier ``default``)."""
        return {"default": self.providers} if self.providers is not None else self.tiers

    @property
    def default_tier(self) -> str:
        return self.tier or next(iter(self.tier_chains))

    def chain(self, tier: str | None = None) -> list[tuple[str, str]]:
        """(tier, provider) in the order a turn tries them: the tier's chain, then each
        fallback tier's (a provider already tried is not tried twice)."""
        chosen = tier or self.default_tier
        chains = self.tier_chains
        out: list[tuple[str, str]] = []
        for name in (chosen, *(t for t in self.fallback if t != chosen)):
            for provider in chains[name]:
                if all(provider != p for _, p in out):
                    out.append((name, provider))
        return out

    @property
    def provider_names(self) -> list[str]:
        """Every provider any tier of the route names."""
        return list(dict.fromkeys(p for chain in self.tier_chains.values() for p in chain))


class RoutingRule(_Section):
    """Picks a route (and tier) for requests that name none. The first matching rule wins."""

    name: str | None = Field(default=None, description="shown in metrics; default: rule-<n>")
    when: Condition = Field(description="a condition on the request (see docs/routing.md)")
    route: str
    tier: str | None = None


class RoutingSettings(_Section):
    rules: list[RoutingRule] = Field(default_factory=list)


class ToolSettings(_Section):
    """Python functions the model may call (see ``tokenwire.tools``)."""

    modules: list[str] = Field(
        default_factory=list, description="modules whose @tool functions are registered"
    )
    builtin: bool = Field(default=True, description="register current_time and calculator")
    timeout_s: float = Field(default=30.0, gt=0, description="a call running longer fails")
    max_result_chars: int = Field(
        default=16_000, ge=100, description="a result sent back to the model is cut past this"
    )


class RetrievalSettings(_Section):
    """The built-in knowledge base (``tokenwire kb add``): SQLite FTS5 or Postgres FTS."""

    url: str = Field(
        default="", description="sqlite:///PATH or postgresql+asyncpg://...; empty: the store's"
    )
    kb_tool: bool = Field(
        default=True, description="offer the knowledge base as the tool `kb_search` too"
    )


class DeadlineSettings(_Section):
    """Seconds; 0 disables a deadline."""

    first_token_s: float = Field(default=30.0, ge=0)
    idle_s: float = Field(default=15.0, ge=0)
    total_s: float = Field(default=300.0, ge=0)


class CoalesceSettings(_Section):
    window_ms: float = Field(
        default=15.0, ge=0, description="later deltas merge for this long; the first goes at once"
    )
    max_chars: int = Field(default=8192, ge=1, description="flush early past this many chars")


class RetrySettings(_Section):
    attempts_per_provider: int = Field(default=2, ge=1)
    backoff_initial_s: float = Field(default=0.25, ge=0)
    backoff_max_s: float = Field(default=4.0, ge=0)


class SchedulerSettings(_Section):
    aging_s: float = Field(
        default=30.0, ge=0, description="a background call waiting this long goes first"
    )


class ExtractionSettings(_Section):
    """Defaults of the structured channel; a request's ``extraction`` may override some."""

    timeout_s: float = Field(
        default=120.0, gt=0, description="the whole extraction, re-asks included"
    )
    max_tokens: int = Field(default=512, ge=1, description="per extraction call")
    max_reasks: int = Field(default=2, ge=0, description="re-asks with the validation errors")


class LimitSettings(_Section):
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_ws_frame_bytes: int = Field(default=1_048_576, ge=1024)
    max_active_turns: int = Field(default=2000, ge=1)
    max_active_turns_per_tenant: int | None = Field(
        default=None,
        ge=1,
        description="turns in flight per authenticated tenant; default: half of max_active_turns",
    )
    max_turns_per_connection: int = Field(
        default=100, ge=1, description="turns one WebSocket may have starting or running"
    )
    ws_commands_per_s: float = Field(
        default=100.0,
        ge=0,
        description="a WebSocket's sustained command rate (0: no limit); past it, close 4008",
    )
    ws_command_burst: int = Field(
        default=1000, ge=1, description="commands a WebSocket may send at once, above the rate"
    )
    max_messages: int = Field(default=500, ge=1)
    default_max_tokens: int = Field(default=512, ge=1)
    max_tokens: int = Field(default=32_768, ge=1)
    max_stream_events: int = Field(
        default=100_000, ge=100, description="events kept per stream log"
    )
    slow_client_lag_events: int = Field(
        default=2_000,
        ge=10,
        description="a reader this many events behind a live turn is disconnected",
    )
    slow_client_send_timeout_s: float = Field(
        default=30.0, gt=0, description="a send blocked this long disconnects the reader"
    )
    stream_retention_s: float = Field(
        default=300.0, ge=0, description="finished streams stay readable this long"
    )
    max_retained_streams: int = Field(
        default=10_000, ge=0, description="finished streams kept at most (oldest dropped first)"
    )
    max_stream_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=4096,
        description="bytes of events kept per stream log (oldest trimmed: resume_unavailable)",
    )
    max_retained_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="bytes of every stream log in all (finished streams dropped, oldest first)",
    )
    hook_queue_size: int = Field(default=1000, ge=1)
    disconnect_grace_s: float = Field(
        default=30.0, ge=0, description="on_disconnect=continue: how long a turn waits for a reader"
    )


class StoreSettings(_Section):
    """Persistence of conversations, turn records and the system channel's outbox."""

    url: str = Field(
        default="sqlite+aiosqlite:///tokenwire.db",
        description="sqlite+aiosqlite:///PATH or postgresql+asyncpg://...; empty: no persistence",
    )
    write_timeout_s: float = Field(
        default=10.0, gt=0, description="a turn's record write waits this long, then retries later"
    )
    outbox_poll_s: float = Field(
        default=1.0, gt=0, description="how often the outbox is checked for due deliveries"
    )
    outbox_lease_s: float = Field(
        default=120.0, gt=0, description="a claimed delivery is retried after this if not settled"
    )
    outbox_max_attempts: int = Field(default=8, ge=1, description="then the delivery is dead")
    outbox_backoff_initial_s: float = Field(default=1.0, ge=0)
    outbox_backoff_max_s: float = Field(default=300.0, ge=0)

    @field_validator("url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        # sqlite:///x.db and postgresql://... as users write them get the async drivers;
        # another database is refused here, in one line, rather than at startup.
        from .store.engine import async_database_url

        return async_database_url(url) if url else url


class ContextSettings(_Section):
    """Conversation history: how a turn that names ``conversation_id`` gets its context."""

    max_history_turns: int = Field(
        default=200, ge=0, description="the newest turns loaded; older ones are never sent"
    )
    summarize: Literal["auto", "always", "never"] = Field(
        default="auto",
        description=(
            "summarise turns that no longer fit (a background call after the turn); auto: "
            "not with the local base model, whose summaries lose or invent facts"
        ),
    )
    summary_max_tokens: int = Field(default=256, ge=16)
    summary_timeout_s: float = Field(default=120.0, gt=0)


class RedisSettings(_Section):
    """Scale-out: gateways and workers meeting in Redis (empty ``url``: one process, in memory)."""

    url: str = Field(default="", description="redis://host:6379/0; empty: embedded mode")
    prefix: str = Field(
        default="tw", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="key prefix of every key"
    )
    stream_maxlen: int = Field(
        default=10_000, ge=100, description="approximate MAXLEN of each stream's Redis Stream"
    )
    op_timeout_s: float = Field(
        default=2.0, gt=0, description="a Redis command slower than this counts as a failure"
    )
    worker_heartbeat_s: float = Field(
        default=1.0, gt=0, description="a worker renews its claim on its turns this often"
    )
    worker_lease_s: float = Field(
        default=5.0, gt=0, description="a worker silent this long loses its turns to another"
    )
    log_unavailable_s: float = Field(
        default=5.0,
        gt=0,
        description="a turn whose events cannot be written this long is ended (log_unavailable)",
    )


def _default_providers() -> dict[str, ProviderSettings]:
    return {"local": LocalProviderSettings()}


PROVIDER_KINDS = ("local", "openai", "anthropic", "scripted")


def infer_provider_kinds(value: Any) -> Any:
    """A provider table without ``kind`` whose name is a kind gets that kind: the default
    ``local`` provider tuned by one environment variable
    (``TOKENWIRE_PROVIDERS__LOCAL__N_THREADS=2``) or ``[providers.openai]`` as users write it."""
    if not isinstance(value, dict):
        return value
    return {
        name: (
            {**table, "kind": name}
            if isinstance(table, dict) and "kind" not in table and name in PROVIDER_KINDS
            else table
        )
        for name, table in value.items()
    }


class Settings(BaseSettings):
    """Everything tokenwire reads from its configuration."""

    model_config = SettingsConfigDict(
        env_prefix="TOKENWIRE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    providers: dict[str, ProviderSettings] = Field(default_factory=lambda: _default_providers())
    routes: dict[str, RouteSettings] = Field(
        default_factory=lambda: {"default": RouteSettings(providers=["local"])}
    )
    default_route: str = "default"
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    scripted: bool = Field(
        default=False,
        description="add the scripted provider and route `scripted` (never on by default)",
    )
    deadlines: DeadlineSettings = Field(default_factory=DeadlineSettings)
    coalesce: CoalesceSettings = Field(default_factory=CoalesceSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    extraction: ExtractionSettings = Field(default_factory=ExtractionSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    context: ContextSettings = Field(default_factory=ContextSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    schemas: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named JSON Schemas a request can use by name"
    )

    @field_validator("providers", mode="before")
    @classmethod
    def _kind_from_name(cls, value: Any) -> Any:
        return infer_provider_kinds(value)

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        if self.scripted:
            self.providers.setdefault("scripted", ScriptedProviderSettings())
            self.routes.setdefault("scripted", RouteSettings(providers=["scripted"]))
        for route_name, route in self.routes.items():
            for provider in route.provider_names:
                if provider not in self.providers:
                    raise ValueError(
                        f"route {route_name!r} names provider {provider!r}, which is not configured"
                    )
        if self.default_route not in self.routes:
            raise ValueError(f"default_route {self.default_route!r} is not a configured route")
        for number, rule in enumerate(self.routing.rules, 1):
            target = self.routes.get(rule.route)
            if target is None:
                raise ValueError(
                    f"routing rule {number} names route {rule.route!r}, not configured"
                )
            if rule.tier is not None and rule.tier not in target.tier_chains:
                raise ValueError(
                    f"routing rule {number} names tier {rule.tier!r}, which route "
                    f"{rule.route!r} does not have"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _TOML_PATH.get("path")
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


# pydantic-settings reads the TOML path at class level; load_settings sets it for one call.
_TOML_PATH: dict[str, Path | None] = {"path": None}


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (a TOML file; ``$TOKENWIRE_CONFIG`` when None), env and overrides.

    Raises :class:`~tokenwire.config_errors.ConfigError` (a ``ValueError``) with one line per
    error: the file or environment variable, the key path, what is wrong."""
    chosen = path if path is not None else os.environ.get("TOKENWIRE_CONFIG")
    toml_path = Path(chosen) if chosen else None
    if toml_path is not None and not toml_path.is_file():
        raise FileNotFoundError(f"config file not found: {toml_path}")
    _TOML_PATH["path"] = toml_path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise config_error(exc, Settings, source=toml_path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{toml_path}: not valid TOML: {exc}"]) from None
    finally:
        _TOML_PATH["path"] = None
