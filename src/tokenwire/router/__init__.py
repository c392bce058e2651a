"""The response router (the system channel): after ``done``, deliver the turn record to the
routes whose conditions match — Python handlers, a webhook, a JSONL file — each isolated,
with a timeout, at least once, under the idempotency key ``<stream_id>:<route>``.

See :mod:`tokenwire.router.record` for the record shape, :mod:`.conditions` for conditions,
:mod:`.router` for the dispatch contract and :mod:`.config` for the TOML settings.
"""

from __future__ import annotations

from .conditions import (
    AllOf,
    Always,
    AnyCondition,
    BaseCondition,
    Condition,
    FieldAnyOf,
    FieldEquals,
    FieldExists,
    Not,
    TextLength,
)
from .config import (
    BuiltinRouteSettings,
    JsonlSinkSettings,
    RouterSettings,
    SinkSettings,
    WebhookSinkSettings,
)
from .jsonl import JsonlSink
from .metrics import RouterMetrics
from .record import MISSING, build_record, idempotency_key, resolve
from .result import Outcome, ResultObserver, RouteResult
from .router import Handler, Predicate, Route, Router
from .sinks import DeliveryError, Sink
from .webhook import WebhookSink, sign, verify_signature

__all__ = [
    "MISSING",
    "AllOf",
    "Always",
    "AnyCondition",
    "BaseCondition",
    "BuiltinRouteSettings",
    "Condition",
    "DeliveryError",
    "FieldAnyOf",
    "FieldEquals",
    "FieldExists",
    "Handler",
    "JsonlSink",
    "JsonlSinkSettings",
    "Not",
    "Outcome",
    "Predicate",
    "ResultObserver",
    "Route",
    "RouteResult",
    "Router",
    "RouterMetrics",
    "RouterSettings",
    "Sink",
    "SinkSettings",
    "TextLength",
    "WebhookSink",
    "WebhookSinkSettings",
    "build_record",
    "idempotency_key",
    "resolve",
    "sign",
    "verify_signature",
]
