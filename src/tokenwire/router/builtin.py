"""Build the sinks of built-in routes from their settings."""

from __future__ import annotations

from collections.abc import Mapping

from .config import JsonlSinkSettings, RouterSettings, SinkSettings, WebhookSinkSettings
from .jsonl import JsonlSink
from .sinks import Sink
from .sql import SqlSink
from .webhook import WebhookSink


def build_sinks(
    settings: RouterSettings, environ: Mapping[str, str], store_url: str | None = None
) -> dict[str, Sink]:
    """The sink of every enabled route, by route name. ``store_url``: where an ``sql`` sink
    without a ``url`` of its own writes.

    Raises ``ValueError`` when a webhook's ``secret_env`` is not set in ``environ``, or an
    ``sql`` sink has no database (before anything is built, so nothing is left to close): an
    unsigned delivery where a signed one was configured would be refused by its receiver, so
    it is a startup error.
    """
    enabled = {name: spec.sink for name, spec in settings.routes.items() if spec.enabled}
    secrets: dict[str, str | None] = {}
    for name, sink in enabled.items():
        secrets[name] = None
        if isinstance(sink, WebhookSinkSettings) and sink.secret_env is not None:
            secrets[name] = environ.get(sink.secret_env)
            if not secrets[name]:
                raise ValueError(f"route {name!r}: ${sink.secret_env} is not set")
        if not isinstance(sink, WebhookSinkSettings | JsonlSinkSettings):
            if not (sink.url or store_url):
                raise ValueError(
                    f"route {name!r}: an sql sink needs a url, or the store's ([store] url)"
                )
            secrets[name] = sink.url or store_url
    return {name: _build(sink, secrets[name]) for name, sink in enabled.items()}


def _build(settings: SinkSettings, secret: str | None) -> Sink:
    """``secret``: the webhook's signing secret, or the sql sink's database URL."""
    if isinstance(settings, WebhookSinkSettings):
        return WebhookSink(
            settings.url,
            secret=secret,
            headers=settings.headers,
            max_attempts=settings.max_attempts,
            backoff_initial_s=settings.backoff_initial_s,
            backoff_max_s=settings.backoff_max_s,
            retry_after_max_s=settings.retry_after_max_s,
            request_timeout_s=settings.request_timeout_s,
        )
    if isinstance(settings, JsonlSinkSettings):
        return JsonlSink(settings.path, fsync=settings.fsync)
    assert secret is not None
    return SqlSink(secret)
